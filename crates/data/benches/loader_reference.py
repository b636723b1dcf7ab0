"""PIL + torchvision counterpart of benches/loader.rs: images/s of decode + training augmentation
(RandomResizedCrop(224, bicubic), RandomHorizontalFlip, ToTensor, Normalize with CLIP's constants)
+ batching with a torch DataLoader using the same worker count, on the same JPEG files.

    python loader_reference.py --dir DIR [--workers 2] [--batch 32] [--size 224] [--epochs 4]
"""

import argparse
import os
import statistics
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.transforms import InterpolationMode

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class Files(Dataset):
    """The files of a folder with dummy labels, read as Dassl's DatasetWrapper reads them."""

    def __init__(self, paths, transform):
        self.paths = paths
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        image = Image.open(self.paths[index]).convert("RGB")
        return self.transform(image), index % 10


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    paths = sorted(
        os.path.join(args.dir, f) for f in os.listdir(args.dir) if f.endswith(".jpg")
    )
    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(
                args.size, scale=(0.08, 1.0), interpolation=InterpolationMode.BICUBIC
            ),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    loader = DataLoader(
        Files(paths, transform),
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        drop_last=False,
    )
    torch.manual_seed(1)
    rates = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        seen = 0
        for images, labels in loader:
            seen += images.shape[0]
        assert seen == len(paths)
        rate = seen / (time.perf_counter() - start)
        print(f"python epoch {epoch}: {rate:.1f} images/s")
        rates.append(rate)
    print(
        f"python: {statistics.median(rates):.1f} images/s (median of {len(rates)} epochs; "
        f"{len(paths)} images, {args.workers} workers, batch {args.batch}, {args.size}px; "
        f"torch {torch.__version__}, Pillow {Image.__version__})"
    )


if __name__ == "__main__":
    main()
