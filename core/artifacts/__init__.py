"""Model artifacts below compress/ and serve/: the model card (what a deployable file is, how to feed it, how it
was made and calibrated), reading and writing it with its model, and ONNX Runtime sessions."""
