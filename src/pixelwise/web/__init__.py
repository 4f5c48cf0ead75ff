"""`pixelwise annotate`: the browser app to draw and correct masks (server.py), its dataset side (store.py),
the model beside it (assist.py) and retraining as a child process (retrain.py)."""
