"""`segment_anything.utils` as scripts import it: `transforms`, `amg`, `onnx`."""
