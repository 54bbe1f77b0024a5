"""Device side: the small files that come back (generator + discriminator, float16; no optimiser)."""
import os, shutil, sys
from lrac.train.checkpoint import save_gan_weights
out = os.environ["OUT"]
for run in sys.argv[1:]:
    name = os.path.basename(run)
    for ck in ("last", "best"):
        src = f"{run}/{ck}.pt"
        if os.path.isfile(src):
            save_gan_weights(src, f"{out}/{name}-{ck}-gd.pt", half=True)
    if os.path.isfile(f"{run}/train.jsonl"):
        shutil.copyfile(f"{run}/train.jsonl", f"{out}/{name}-train.jsonl")
print("exported", os.listdir(out))
