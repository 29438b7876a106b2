"""What a run or a search will train, known before any compute: effective pipelines, the
space check and the dry run. Nothing here starts Ray, reads data or allocates weights."""
