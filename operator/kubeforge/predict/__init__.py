"""Apply a model to anything: image files, folders, S3 prefixes, videos and dataset versions.

The contract between the parts (issue 13); each module owns one job:

- `engine`: a `Backend` runs the model on one preprocessed input (`TritonBackend`: a served model;
  `OnnxBackend`: a TrainingJob's export in ONNX Runtime), `decode` turns its outputs into a
  `kubeforge.serving.client.Prediction`, and `predict_stream(backend, items, ...)` applies the model to
  an iterable of `Item`s and yields one `Prediction` per item, in input order (a pipeline: decoding
  and resizing overlap the model's work).
- `sources`: PATH arguments (files, folders, S3 prefixes, videos) -> `Item`s.
- `video`, `tracking`: frames as `Item`s with `frame` and `timestamp`; track ids on detections.
- `outputs`: writers of the formats `kubeforge predict --format` offers (table, COCO results, JSON
  lines, annotated images or video, a DatasetVersion of the predictions).
- `threshold`: the default confidence threshold (the model's Benchmark F1-optimal one).
"""
