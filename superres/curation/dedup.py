"""Near-duplicate groups from 64-bit perceptual hashes, found without comparing every pair.

With a Hamming threshold t, the 64 bits are cut into t + 1 bands: two hashes within t bits of each other
agree exactly on at least one band (pigeonhole), so only hashes sharing a band value are compared.
"""
from __future__ import annotations

from collections import defaultdict

from superres.curation.metrics import hamming


def _bands(threshold: int) -> list[tuple[int, int]]:
  n = min(threshold + 1, 64)
  edges = [round(i * 64 / n) for i in range(n + 1)]
  return [(edges[i], edges[i + 1] - edges[i]) for i in range(n)]


def groups(hashes: list[int], threshold: int = 10) -> list[list[int]]:
  """Connected groups (index lists, size >= 2) of hashes linked by Hamming distance <= threshold."""
  if not 0 <= threshold < 64:
    raise ValueError(f"threshold must be in [0, 63], got {threshold}")
  parent = list(range(len(hashes)))

  def find(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  for start, width in _bands(threshold):
    buckets = defaultdict(list)
    for i, h in enumerate(hashes):
      buckets[(h >> start) & ((1 << width) - 1)].append(i)
    for members in buckets.values():
      for a in range(len(members)):
        for b in range(a + 1, len(members)):
          i, j = members[a], members[b]
          if find(i) != find(j) and hamming(hashes[i], hashes[j]) <= threshold:
            parent[find(i)] = find(j)
  out = defaultdict(list)
  for i in range(len(hashes)):
    out[find(i)].append(i)
  return [g for g in out.values() if len(g) > 1]
