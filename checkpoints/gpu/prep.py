"""Device side: decode the carried Opus training speech to 24 kHz wav in parallel (16 cores)."""
import os, sys
from multiprocessing import Pool
import soundfile as sf

def dec(line):
    utt, src = line.split()
    dst = "/tmp/wav/" + os.path.splitext(src)[0].replace("/", "_") + ".wav"
    x, sr = sf.read(src, dtype="int16")
    sf.write(dst, x, sr, subtype="PCM_16")
    return f"{utt} {dst}\n"

if __name__ == "__main__":
    os.makedirs("/tmp/wav", exist_ok=True)
    lines = [l for l in open(".gpu/lists/train.speech.scp") if l.strip()]
    with Pool(os.cpu_count()) as pool:
        out = pool.map(dec, lines, chunksize=8)
    open("/tmp/train.speech.scp", "w").writelines(out)
    print("decoded", len(out), "files")
