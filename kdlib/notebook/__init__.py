"""The notebook side: what lessons share (opening a study, showing kdlib's source), figures, widgets, progress
inside kernels, and ``reproduce`` (every notebook executed by papermill)."""
