"""The SR trainer's command line: `python -m superres.train --config configs/sr_edsr.py[:arg] --workdir DIR
[--config.k=v]` (the training itself is `superres.sr.trainer.train_and_evaluate`)."""
from fractalpre import train
from superres.sr.trainer import train_and_evaluate

if __name__ == "__main__":
  train.run(train_and_evaluate, "superres.train")
