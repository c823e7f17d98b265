"""How base2new_parity_train.json was made (run once; the JSON is frozen in git).

The reference rule, written independently of medclipsvd.data: seed Python's global RNG with the seed, then
for val (min(K,4) per class) and train (K per class), group the split file's entries by label in order
of first appearance and draw `random.sample` (`random.choices` if a class has fewer than K), over ALL
classes; finally keep the training entries whose label is a base class (label < ceil(C/2)).

    python tests/engine/data/make_base2new_expected.py ../shared/data/splits > tests/engine/data/base2new_parity_train.json
"""
import json
import math
import random
import sys
from collections import defaultdict
from pathlib import Path

DATASETS = ["BTMRI", "CHMNIST", "COVID_19", "CTKidney", "KneeXray", "Kvasir", "LungColon", "RETINA"]
K, SEEDS = 16, (1, 2, 3)


def draw(entries: dict, k: int, seed: int) -> list[str]:
    random.seed(seed)
    chosen = {}
    for split, n in (("val", min(k, 4)), ("train", k)):
        groups = defaultdict(list)
        for e in entries[split]:
            groups[e[1]].append(e)
        out = []
        for items in groups.values():
            out += random.sample(items, n) if len(items) >= n else random.choices(items, k=n)
        chosen[split] = out
    n_classes = len({e[1] for split in ("train", "val", "test") for e in entries[split]})
    n_base = math.ceil(n_classes / 2)
    return [e[0] for e in chosen["train"] if e[1] < n_base]


if __name__ == "__main__":
    root = Path(sys.argv[1])
    out = {d: {str(s): draw(json.loads((root / f"split_{d}.json").read_text()), K, s) for s in SEEDS}
           for d in DATASETS}
    print(json.dumps({"k": K, "rule": "reference: sample over all classes, then keep base", "train": out},
                     indent=0))
