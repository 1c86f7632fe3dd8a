"""Instance centres as OPTICS clusters of the votes (what Kendall et al. use).

OPTICS needs no cluster count and no fixed cluster size, but it visits the votes one by
one in Python (about 1 s per thousand on a 2-core test machine), so it clusters a
subsample of them. It is there for comparison with the paper, not for serving, and
scikit-learn, which it needs, is an optional extra (``scene-mtl[optics]``) that the
serving install and image leave out: `installed` lets the settings refuse ``optics``
at start rather than on the first request.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np

from service.votes import FloatArray, IntArray, Votes

EXTRA = "optics"
MISSING = (
    "instance grouping by OPTICS needs scikit-learn, which the serving install leaves out: "
    f"install the {EXTRA!r} extra (pip install 'scene-mtl[{EXTRA}]') or use the 'peaks' method"
)


def installed() -> bool:
    """Whether scikit-learn can be imported, found without importing it (that takes seconds)."""
    return importlib.util.find_spec("sklearn") is not None


def optics_centres(
    votes: Votes,
    min_votes: float,
    top_k: int,
    max_samples: int,
    eps: float,
) -> tuple[FloatArray, IntArray]:
    """Centres ``[K, 2]`` (y, x) and their vote group ``[K]``: means of OPTICS clusters.

    Clusters are cut from the reachability ordering at ``eps`` rather than by OPTICS'
    default xi extraction: xi reports the leaves of the cluster hierarchy, which split
    each instance's votes into many small clusters (on rendered scenes it found 5-10
    times more clusters than instances). Reachability beyond ``eps`` cannot change a
    cut at ``eps``, so ``max_eps = eps`` bounds the neighbourhood searches for free.
    """
    try:
        from sklearn.cluster import OPTICS  # only this path needs scikit-learn (and its import time)
    except ImportError as error:
        raise ImportError(MISSING) from error

    count = votes.rows.size
    sample = np.unique(np.linspace(0, count - 1, min(count, max_samples)).round().astype(np.intp))
    min_samples = max(2, round(min_votes * sample.size / count))
    points = np.stack([votes.vote_y[sample], votes.vote_x[sample]], axis=1)
    sample_group = votes.group[sample]
    centres: list[FloatArray] = []
    sizes: list[int] = []
    groups: list[int] = []
    for group in range(votes.groups):
        members = points[sample_group == group]
        if len(members) < min_samples:
            continue
        optics = OPTICS(min_samples=min_samples, max_eps=eps, cluster_method="dbscan", eps=eps)
        with warnings.catch_warnings():
            # Scattered votes with no neighbour within eps are simply no instance, not a
            # condition worth a warning in the service's log on every such image.
            warnings.filterwarnings("ignore", message="All reachability values are inf", category=UserWarning)
            labels = optics.fit(members).labels_
        for label in range(int(labels.max()) + 1):
            cluster = members[labels == label]
            centres.append(cluster.mean(axis=0))
            sizes.append(len(cluster))
            groups.append(group)
    if not centres:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.intp)
    strongest = np.argsort(-np.asarray(sizes), kind="stable")[:top_k]
    return np.asarray(centres)[strongest], np.asarray(groups, dtype=np.intp)[strongest]
