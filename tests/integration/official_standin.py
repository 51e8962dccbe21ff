"""A small stand-in for a checkout of yoonkicho/PPLR, for the tests of
``benchmarks.proxy.official_pplr`` and ``benchmarks.proxy.official_shims``.

The repository never contains the official code; these few files, written from scratch for the
tests, only have the entry points the shims touch (the modules, names and call signatures), so
that the shims and the side-by-side script can run end to end without the real checkout. The
method here is a toy (a part model, DBSCAN on a Jaccard distance, a per-part agreement score and
a few steps of CE and triplet losses); nothing of it is PPLR's.

Besides the official-like records (``log.txt``, ``scores.npy``, ``best.pth``, ``last.pth``)
the stand-in writes ``standin.json`` into ``--logs-dir``: what it saw of the shims (the head
widths, the index class faiss gave, the ``search_option`` its searches ran with, the Pad and
Resize it got, whether ``.cuda()`` was called).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

_TRAIN = """
import argparse
import json
import os.path as osp
import random
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.cluster import DBSCAN

from pplr import datasets, evaluators
from pplr.models import resnet50part
from pplr.utils import faiss_rerank
from pplr.utils.data import transforms as T
from pplr.utils.faiss_rerank import compute_jaccard_distance, compute_ranked_list


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("-d", "--dataset", default="market1501")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--logs-dir", required=True)
    p.add_argument("-b", "--batch-size", type=int, default=64)
    p.add_argument("-n", "--num-instances", type=int, default=4)
    p.add_argument("-j", "--workers", type=int, default=0)
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--print-freq", type=int, default=10)
    p.add_argument("--eval-step", type=int, default=1)
    p.add_argument("--part", type=int, default=3)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--aals-epoch", type=int, default=5)
    p.add_argument("--lr", type=float, default=3.5e-4)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--iters", type=int, default=400)
    p.add_argument("--step-size", type=int, default=20)
    p.add_argument("--k1", type=int, default=30)
    p.add_argument("--eps", type=float, default=0.5)
    return p.parse_args()


args = parse()
log_file = open(osp.join(args.logs_dir, "log.txt"), "a")


def log(line):
    print(line)
    log_file.write(line + "\\n")
    log_file.flush()


log(" ".join(sys.argv))
random.seed(args.seed)
np.random.seed(args.seed)
torch.manual_seed(args.seed)

dataset = datasets.create(args.dataset, args.data_dir)
train = sorted(dataset.train)
size = (args.height, args.width)
norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
resize = T.Resize(size, interpolation=3)
pad = T.Pad(10)
test_tf = T.Compose([resize, T.ToTensor(), norm])
train_tf = T.Compose([resize, pad, T.RandomCrop(size), T.ToTensor(), norm])


def images(items, tf):
    return torch.stack([tf(Image.open(path).convert("RGB")) for path, _, _ in items]).cuda()


@torch.no_grad()
def features(model, items):
    model.eval()
    g, p = model(images(items, test_tf))
    return F.normalize(g, dim=1), F.normalize(p, dim=1)


model = resnet50part(num_parts=args.part, num_classes=len(train)).cuda()
record = {
    "head_width": model.bn.num_features,
    "classifier_in": model.classifier.in_features,
    "part_head_widths": [bn.num_features for bn in model.part_bns],
    "index_class": type(faiss_rerank.faiss.IndexFlatL2(2)).__name__,
    "pad": pad.padding,
    "interpolation": str(getattr(resize.interpolation, "value", resize.interpolation)),
    "cuda": torch.zeros(1).cuda().device.type,
}
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.step_size, gamma=0.1)
all_scores = []
best = -1.0
for epoch in range(args.epochs):
    gf, pf = features(model, train)
    dist = compute_jaccard_distance(gf, k1=args.k1, k2=6)
    labels = DBSCAN(eps=args.eps, min_samples=4, metric="precomputed").fit_predict(dist)
    near = compute_ranked_list(gf, k=args.k, verbose=False)
    scores = np.zeros((len(train), args.part), dtype=np.float32)
    for p in range(args.part):
        near_p = compute_ranked_list(pf[:, :, p], k=args.k, verbose=False)
        for i in range(len(train)):
            scores[i, p] = len(set(near[i]) & set(near_p[i])) / args.k
    all_scores.append(scores)
    np.save(osp.join(args.logs_dir, "scores.npy"), np.stack(all_scores))
    log(f"epoch {epoch}: {labels.max() + 1} clusters")

    keep = np.flatnonzero(labels >= 0)
    targets = labels if len(keep) else np.arange(len(train))
    keep = keep if len(keep) else np.arange(len(train))
    classes = int(targets.max()) + 1
    sums = np.zeros(3)
    model.train()
    for i in range(args.iters):
        batch = np.random.choice(keep, size=min(args.batch_size, len(keep)), replace=False)
        x = images([train[j] for j in batch], train_tf)
        y = torch.as_tensor(targets[batch], dtype=torch.long).cuda()
        f, logits, part_logits = model(x)
        gce = F.cross_entropy(logits[:, :classes], y)
        pce = sum(F.cross_entropy(z[:, :classes], y) for z in part_logits) / args.part
        d = torch.cdist(f, f)
        same = (y[:, None] == y[None]).float()
        tri = F.softplus((d * same).max(1).values - (d + 1e6 * same).min(1).values).mean()
        optimizer.zero_grad()
        (gce + pce + tri).backward()
        optimizer.step()
        now = np.array([gce.item(), pce.item(), tri.item()])
        sums += now
        if (i + 1) % args.print_freq == 0:
            avg = sums / (i + 1)
            log(
                f"Epoch: [{epoch}][{i + 1}/{args.iters}]\\t"
                f"L_GCE {now[0]:.3f} ({avg[0]:.3f})\\t"
                f"L_PCE {now[1]:.3f} ({avg[1]:.3f})\\t"
                f"L_TRI {now[2]:.3f} ({avg[2]:.3f})"
            )
    scheduler.step()

    if (epoch + 1) % args.eval_step == 0 or epoch == args.epochs - 1:
        qf, _ = features(model, dataset.query)
        gallery_f, _ = features(model, dataset.gallery)
        m_ap = evaluators.evaluate_all(qf, gallery_f, dataset.query, dataset.gallery)
        if m_ap > best:
            best = m_ap
            torch.save(model.state_dict(), osp.join(args.logs_dir, "best.pth"))
        log(f"epoch {epoch}: mAP {m_ap:.1%} (best {best:.1%})")
torch.save(model.state_dict(), osp.join(args.logs_dir, "last.pth"))

model.load_state_dict(torch.load(osp.join(args.logs_dir, "best.pth")))
qf, _ = features(model, dataset.query)
gallery_f, _ = features(model, dataset.gallery)
cmc, m_ap = evaluators.evaluate_all(
    qf, gallery_f, dataset.query, dataset.gallery, cmc_flag=True
)
log(f"best model: mAP {m_ap:.1%}, Rank-1 {cmc[0]:.1%}")
record["search_options"] = sorted(set(faiss_rerank.SEARCH_OPTIONS))
with open(osp.join(args.logs_dir, "standin.json"), "w") as f:
    json.dump(record, f)
"""

_DATASETS = """
import glob
import os.path as osp
import re


class Market:
    def __init__(self, root):
        base = osp.join(root, "Market-1501-v15.09.15")
        self.train = self.read(osp.join(base, "bounding_box_train"), relabel=True)
        self.query = self.read(osp.join(base, "query"))
        self.gallery = self.read(osp.join(base, "bounding_box_test"))

    @staticmethod
    def read(folder, relabel=False):
        items = []
        for path in sorted(glob.glob(osp.join(folder, "*.jpg"))):
            pid, cam = map(int, re.match(r"([-\\d]+)_c(\\d+)", osp.basename(path)).groups())
            if pid != -1:
                items.append((path, pid, cam))
        if relabel:
            new = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in items}))}
            items = [(path, new[pid], cam) for path, pid, cam in items]
        return items


def create(name, root):
    if name != "market1501":
        raise KeyError(name)
    return Market(root)
"""

_EVALUATORS = """
import numpy as np
import torch


def evaluate_all(query_features, gallery_features, query, gallery, cmc_flag=False):
    dist = torch.cdist(query_features, gallery_features).numpy()
    q_pids = np.array([pid for _, pid, _ in query])
    q_cams = np.array([cam for _, _, cam in query])
    g_pids = np.array([pid for _, pid, _ in gallery])
    g_cams = np.array([cam for _, _, cam in gallery])
    aps, cmc = [], np.zeros(len(gallery))
    for i in range(len(query)):
        order = np.argsort(dist[i], kind="stable")
        valid = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        hits = (g_pids[order] == q_pids[i])[valid]
        if not hits.any():
            continue
        cmc[np.argmax(hits):] += 1
        ranks = np.flatnonzero(hits) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    m_ap = float(np.mean(aps))
    if cmc_flag:
        return cmc / len(aps), m_ap
    return m_ap
"""

_RESNET_PART = """
import torch
import torchvision
from torch import nn


class ResNetPart(nn.Module):
    __factory = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}

    def __init__(self, depth, pretrained=True, num_parts=3, num_classes=0):
        super().__init__()
        net = ResNetPart.__factory[depth](pretrained=pretrained)
        net.layer4[0].conv2.stride = (1, 1)  # last stride 1 (a Bottleneck strides in conv2)
        net.layer4[0].downsample[0].stride = (1, 1)
        self.base = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
            net.layer4,
        )
        self.num_parts = num_parts
        self.bn = nn.BatchNorm1d(2048)
        self.classifier = nn.Linear(2048, num_classes, bias=False)
        self.part_bns = nn.ModuleList([nn.BatchNorm1d(2048) for _ in range(num_parts)])
        self.part_classifiers = nn.ModuleList(
            [nn.Linear(2048, num_classes, bias=False) for _ in range(num_parts)]
        )

    def forward(self, x):
        x = self.base(x)
        g = x.mean((2, 3))
        parts = [bn(c.mean((2, 3))) for bn, c in zip(self.part_bns, x.chunk(self.num_parts, 2))]
        if not self.training:
            return self.bn(g), torch.stack(parts, dim=2)
        logits = self.classifier(self.bn(g))
        return g, logits, [c(p) for c, p in zip(self.part_classifiers, parts)]


def resnet50part(**kwargs):
    return ResNetPart(50, **kwargs)
"""

_FAISS_RERANK = """
import faiss
import numpy as np

SEARCH_OPTIONS = []


def _neighbours(features, k, search_option):
    SEARCH_OPTIONS.append(search_option)
    if search_option != 3:
        raise RuntimeError(f"the stand-in searches on the CPU only, not option {search_option}")
    x = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, nn = index.search(x, min(k, len(x)))
    return nn


def compute_jaccard_distance(features, k1=20, k2=6, search_option=0):
    nn = _neighbours(features, k1, search_option)
    sets = [set(row) for row in nn]
    mutual = [{j for j in sets[i] if i in sets[j]} for i in range(len(sets))]
    n = len(sets)
    dist = np.ones((n, n), dtype=np.float32)
    for i in range(n):
        for j in range(n):
            union = len(mutual[i] | mutual[j])
            if union:
                dist[i, j] = 1.0 - len(mutual[i] & mutual[j]) / union
    np.fill_diagonal(dist, 0.0)
    return dist


def compute_ranked_list(features, k=20, search_option=0, verbose=True):
    return _neighbours(features, k + 1, search_option)[:, 1:]
"""

FILES = {
    "examples/train_pplr.py": _TRAIN,
    "pplr/__init__.py": "",
    "pplr/datasets/__init__.py": _DATASETS,
    "pplr/evaluators.py": _EVALUATORS,
    "pplr/models/__init__.py": "from .resnet_part import ResNetPart, resnet50part\n",
    "pplr/models/resnet_part.py": _RESNET_PART,
    "pplr/utils/__init__.py": "",
    "pplr/utils/data/__init__.py": "",
    "pplr/utils/data/transforms.py": "from torchvision.transforms import *  # noqa: F403\n",
    "pplr/utils/faiss_rerank.py": _FAISS_RERANK,
}


def write_standin(root: Path) -> Path:
    """Write the stand-in checkout into ``root/PPLR`` and return that folder."""
    repo = root / "PPLR"
    for name, text in FILES.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return repo
