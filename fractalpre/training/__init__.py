"""Training: the generic trainer (`trainer`: state, the one update step, the asynchronous loop), orbax
checkpoints with fallback on damage (`checkpoints`), metrics.jsonl / TensorBoard / W&B (`metric_writer`),
one run per workdir (`workdir_claim`), pretrained weights into a new model (`init_from`), configs by file or
name (`config_files`), DiLoCo-style workers (`outer_step`), the bytes a compiled step sends (`wire_bytes`),
the start of multi-process jobs (`distributed`), and the image-classification task (`classification`, `classification_scores`)."""
from fractalpre.training.classification import train_and_evaluate
from fractalpre.training.trainer import STOPS, Interrupted, NonFiniteLoss, OutOfSpace, Preempted, build, fit

__all__ = ["STOPS", "Interrupted", "NonFiniteLoss", "OutOfSpace", "Preempted", "build", "fit", "train_and_evaluate"]
