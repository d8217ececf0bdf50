"""One stage each; no stage imports another (run aside). A stage with an algorithm is a package whose
command only parses flags and calls its stage's run().

prepare/    the default VLM built offline
calibrate/  int-k qparams by a calibrator (calibrators.py)
tune/       QSLAW and the baseline methods, and stage-1 alignment
fold/       the tuned scales folded into packed codes
export/     the fold artifact to a deployable model, by an exporter
evaluate/   eval ppl, eval mcq, generate
run.py      the main job (run.yaml: its recipe)
"""
