import os
import platform

import pytest

from pairs import write_pair

# Under pytest-xdist each worker, and every command it starts, gets its share of the cores: two workers
# each running BLAS on every core would slow each other down. Set before any test imports torch's pools.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1)
                                                     // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


@pytest.fixture
def folder_dataset(tmp_path):
    """images/ masks/ classes.txt with 3 classes and 12 samples, no split files."""
    root = tmp_path / "folder"
    for i in range(12):
        write_pair(root / "images" / f"img{i:02d}.png", root / "masks" / f"img{i:02d}.png", labels=(0, 1, 2, 255), seed=i)
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    return root


@pytest.fixture(scope="session")
def nuclei_root():
    from pixelwise.demo import sample_root

    return sample_root()


def cpu_model() -> str:
    """lscpu's model name: the suite's timings and precision branches depend on it."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pytest_report_header(config):
    from pixelwise import runtime

    native = runtime.native_cpu_precisions()
    forced = " (forced by " + runtime.NATIVE_PRECISIONS_ENV + ")" if runtime.os.environ.get(
        runtime.NATIVE_PRECISIONS_ENV, "").strip() else ""
    taken = {"bf16": "bf16 autocast" if "bf16" in native else "fp32",
             "fp16": "fp16" if "fp16" in native else "fp32"}
    return (f"CPU: {cpu_model()}; native {', '.join(sorted(native)) or 'neither bf16 nor fp16'}{forced}: "
            f"training and --profile fast take {taken['bf16']}, --profile accurate takes {taken['fp16']}; "
            "tests that force the other side set " + runtime.NATIVE_PRECISIONS_ENV)
