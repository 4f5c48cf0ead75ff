"""What pixelwise prints, recorded: the transcripts the README and the docs show are rendered from this run.

    python benchmarks/transcripts.py

Runs, each in a fresh folder so that the paths it prints are the ones a new user sees:
  demo            `pixelwise demo` (the bundled nuclei sample, the whole flow)
  advise_nuclei   `pixelwise advise` on the nuclei sample
  advise_camvid   `pixelwise advise` on CamVid (../shared/data/camvid)
  evaluate        `pixelwise evaluate` of the demo's model on its held-out tiles (--engine auto)
  semi            `pixelwise train --unlabelled` on the nuclei sample, 4 tiles labelled and the other 6 as
                  the pool (benchmarks/semi_supervised.py's view), SEMI_EPOCHS epochs
Progress bars are off (TQDM_DISABLE), so only the lines a log keeps are recorded. The last line printed
is one JSON object: each command, its exit status and its standard output.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import CAMVID, run_record
from semi_supervised import build_view

from pixelwise.demo import sample_root

ROOT = Path(__file__).resolve().parents[1]
SEMI_EPOCHS = 40  # enough for the model to grow sure of some pool pixels


def record(command: list[str], cwd: Path) -> dict:
    """Run `pixelwise COMMAND...` in `cwd`; -> the command as a user types it, its status and its output."""
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "pixelwise", *command], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if done.returncode:
        sys.stderr.write(done.stderr)
    print(f"pixelwise {' '.join(command)}: exit {done.returncode}", flush=True)
    return {"command": "pixelwise " + " ".join(command), "exit_code": done.returncode, "stdout": done.stdout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--camvid", default=str(CAMVID))
    args = parser.parse_args()
    nuclei = sample_root()
    transcripts = {}
    with tempfile.TemporaryDirectory(prefix="pixelwise-transcripts-") as folder:
        # a clone beside ../shared, as the docs assume, so that the commands read as a reader types them
        cwd, camvid = Path(folder) / "pixelwise", "../shared/data/camvid"
        sample = os.path.relpath(nuclei, ROOT)
        (cwd / sample).parent.mkdir(parents=True)
        (cwd / sample).symlink_to(nuclei)
        (cwd / camvid).parent.mkdir(parents=True)
        (cwd / camvid).symlink_to(Path(args.camvid).resolve())
        transcripts["demo"] = record(["demo"], cwd)
        transcripts["advise_nuclei"] = record(["advise", "--data", sample], cwd)
        transcripts["advise_camvid"] = record(["advise", "--data", camvid], cwd)
        transcripts["evaluate"] = record(["evaluate", "--checkpoint", "runs/demo/best.pt", "--data", sample,
                                          "--json", "runs/demo/test.json"], cwd)
        build_view(str(nuclei), cwd / "data" / "nuclei_4", 4 / 10, 0, None, None)
        transcripts["semi"] = record(["train", "--data", "data/nuclei_4", "--unlabelled", "data/nuclei_4/pool",
                                      "--epochs", str(SEMI_EPOCHS), "--out", "runs/semi"], cwd)
    print(json.dumps({"benchmark": "transcripts", **run_record(), "transcripts": transcripts}))


if __name__ == "__main__":
    main()
