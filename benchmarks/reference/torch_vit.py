"""PyTorch eager reference for bench_cpu_training.py: timm's ViT-Ti/16 at 224 px, fp32, AdamW, one training
step on a constant batch; prints the median images/s of `--steps` steps as JSON. Needs torch and timm
(never dependencies of fractalpre; run it with a Python that has them):

  /path/to/torch-venv/bin/python benchmarks/reference/torch_vit.py [--batch 32] [--steps 10]
"""
import argparse
import json
import statistics
import time

import timm
import torch


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--batch", type=int, default=32, help="images per step")
  parser.add_argument("--steps", type=int, default=10, help="timed steps (after two untimed)")
  args = parser.parse_args()
  torch.manual_seed(0)
  model = timm.create_model("vit_tiny_patch16_224", num_classes=1000)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
  images, labels = torch.randn(args.batch, 3, 224, 224), torch.randint(0, 1000, (args.batch,))
  times = []
  for i in range(args.steps + 2):
    t = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if i >= 2:
      times.append(time.perf_counter() - t)
  print(json.dumps({"img_s": args.batch / statistics.median(times), "torch": torch.__version__,
                    "threads": torch.get_num_threads()}))


if __name__ == "__main__":
  main()
