"""One index partition: the learnwares whose specifications live in one feature space.

Table and text specs (Gaussian kernel) are embedded with random Fourier features
(`lwdock.rkme.embedding.rff_embeddings`, one seed for the whole suite), so that the squared
L2 distance between two embeddings estimates their squared MMD. FAISS retrieves candidates
from those vectors: an exact flat index (`IDMap2,Flat`) up to `flat_max` learnwares, an
inverted-file index (`IVF<nlist>,Flat`, nlist = sqrt(n), retrained when the partition has
grown fourfold) beyond. The candidates' reduced sets (float32 z, float64 beta) are then
re-ranked with the exact squared MMD in float64: <u,u> - 2 <u,l> + <l,l>, with <l,l>
computed once at insert.

The reference score needs the minimum, mean and maximum distance over the filtered set: the
minimum is the exact best candidate; the mean is <u,u> - 2 mean<u,l> + mean<l,l>, with
mean<l,l> exact (a running sum) and mean<u,l> estimated from the running sum of embeddings
(exact when every filtered learnware was re-ranked); the maximum is the exact distance of the
farthest learnwares found by a farthest-neighbour query (a scan of the embeddings while the
partition is flat; an inner-product IVF index over [v, |v|^2], scalar-quantised, beyond).

Image specs have no Gaussian kernel: their partition keeps the specs and scans them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np

from lwdock.rkme.embedding import rff_embeddings
from lwdock.rkme.kernel import inner_product
from lwdock.rkme.spec import RKMESpec, SpecType

FLAT_MAX = 32_768  # learnwares per partition before FAISS switches to IVF
IVF_REGROW = 4  # retrain the IVF index when the partition has grown this many times
KMEANS_ITERATIONS = 10
TRAIN_POINTS_PER_LIST = 40
FAR_CANDIDATES = 8  # farthest learnwares re-ranked exactly for the score's maximum
EXTEND_ROUNDS = 3  # widenings of the retrieval while the embedding error could hide a result
ERROR_MARGIN = 4.0  # in standard deviations of the measured embedding error
NEAREST_PREFETCH = 16  # an IVF search fetches this many times the first retrieval
_CHUNK_POINTS = 200_000  # reduced-set points per exact kernel block
# The factored kernel is used while gamma (|a|^2 + |b|^2) stays below this (e^600 is finite).
_FACTORED_LIMIT = 600.0


@dataclass(frozen=True)
class PartitionKey:
    spec_type: SpecType
    sample_shape: tuple[int, ...]
    gamma: float
    embedding_model: str = ""
    image_kernel: str = ""

    def __str__(self) -> str:
        dims = "x".join(str(n) for n in self.sample_shape)
        text = f"{self.spec_type.value}/d={dims}"
        if self.spec_type is SpecType.IMAGE:
            return f"{text}/kernel={self.image_kernel}"
        text += f"/gamma={self.gamma:g}"
        if self.spec_type is SpecType.TEXT:
            text += f"/model={self.embedding_model or 'unknown'}"
        return text

    @property
    def embeddable(self) -> bool:
        return self.spec_type is not SpecType.IMAGE


def partition_key(spec: RKMESpec) -> PartitionKey:
    if spec.type is SpecType.IMAGE:
        kernel = spec.image_kernel
        fields = (
            f"v{kernel.version},m{kernel.n_models},w{kernel.width},depth{kernel.depth},"
            f"seed{kernel.seed},mean{kernel.pixel_mean},std{kernel.pixel_std}"
            if kernel is not None
            else "none"
        )
        return PartitionKey(spec.type, spec.sample_shape, 0.0, image_kernel=fields)
    return PartitionKey(
        spec.type,
        (spec.flat_z.shape[1],),
        float(spec.gamma),
        embedding_model=spec.embedding_model if spec.type is SpecType.TEXT else "",
    )


@dataclass
class UserSpec:
    """The user's spec with what every partition needs of it, computed once per query."""

    spec: RKMESpec
    self_product: float
    vector: np.ndarray | None = None  # float32 [D], for embeddable partitions

    @property
    def z(self) -> np.ndarray:
        return self.spec.flat_z

    @property
    def beta(self) -> np.ndarray:
        return self.spec.beta


@dataclass
class Ranked:
    """Exactly re-ranked candidates of one partition search, best first."""

    slots: np.ndarray  # int64
    mmd2: np.ndarray  # float64
    cross: np.ndarray  # <u, l>
    minimum: float
    maximum: float
    mean: float
    count: int  # learnwares that passed the filters


@dataclass
class Partition:
    key: PartitionKey
    embedding_dimension: int
    embedding_seed: int
    flat_max: int = FLAT_MAX
    nprobe: int = 0  # 0 = automatic
    ids: list[str | None] = field(default_factory=list)
    slot_of: dict[str, int] = field(default_factory=dict)
    points: list[np.ndarray | None] = field(default_factory=list)
    betas: list[np.ndarray | None] = field(default_factory=list)
    languages: list[frozenset[str]] = field(default_factory=list)
    specs: list[RKMESpec | None] = field(default_factory=list)  # image partitions only
    free: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        dim = self.embedding_dimension if self.key.embeddable else 0
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.vector_norms = np.zeros(0, dtype=np.float32)  # |v|^2
        self.self_products = np.zeros(0)
        self.alive = np.zeros(0, dtype=bool)
        self.vector_sum = np.zeros(dim)
        self.self_product_sum = 0.0
        self.point_bytes = 0
        self._near: faiss.Index | None = None
        self._far: faiss.Index | None = None
        self._trained_at = 0
        self.nlist = 0
        if self.key.embeddable:
            self._near = faiss.index_factory(dim, "IDMap2,Flat")

    # -- size and stats -----------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self.slot_of)

    @property
    def index_type(self) -> str:
        if not self.key.embeddable:
            return "ExactScan"
        if self.nlist:
            return f"IVF{self.nlist},Flat(nprobe={self._nprobe()})"
        return "IDMap2,Flat"

    @property
    def memory_bytes(self) -> int:
        """Vectors (ours and FAISS's), reduced sets and per-learnware arrays."""
        alive = self.count
        total = self.point_bytes + self.self_products.nbytes + self.alive.nbytes
        if self.key.embeddable:
            total += self.vectors.nbytes + alive * self.embedding_dimension * 4
            if self._far is not None:
                total += alive * (self.embedding_dimension + 1)
        return total

    def _nprobe(self) -> int:
        return self.nprobe or max(32, self.nlist // 16)

    def _far_nprobe(self) -> int:
        """Half the lists of the nearest search: the farthest learnwares found (for the
        score's maximum) were no farther with more at M = 10^5."""
        return max(1, self._nprobe() // 2)

    # -- changes ------------------------------------------------------------------------------

    def _grow(self, needed: int) -> None:
        capacity = self.alive.shape[0]
        if needed <= capacity:
            return
        new = max(needed, 2 * capacity, 64)
        vectors = np.zeros((new, self.vectors.shape[1]), dtype=np.float32)
        vectors[:capacity] = self.vectors
        self.vectors = vectors
        self.vector_norms = np.concatenate(
            [self.vector_norms, np.zeros(new - capacity, dtype=np.float32)]
        )
        self.self_products = np.concatenate([self.self_products, np.zeros(new - capacity)])
        self.alive = np.concatenate([self.alive, np.zeros(new - capacity, dtype=bool)])

    def _take_slot(self) -> int:
        if self.free:
            return self.free.pop()
        slot = len(self.ids)
        self.ids.append(None)
        self.points.append(None)
        self.betas.append(None)
        self.languages.append(frozenset())
        self.specs.append(None)
        return slot

    def add_many(
        self,
        items: Sequence[tuple[str, RKMESpec]],
        vectors: np.ndarray | None = None,
        self_products: np.ndarray | None = None,
    ) -> None:
        """Insert or replace learnwares. `vectors` / `self_products` may be given (a snapshot,
        a bulk build); otherwise they are computed here."""
        for learnware_id, _ in items:
            self.remove(learnware_id)
        if not items:
            return
        specs = [spec for _, spec in items]
        if self_products is None:
            self_products = (
                gaussian_self_products(specs, self.key.gamma)
                if self.key.embeddable
                else np.array([inner_product(s, s) for s in specs])
            )
        if self.key.embeddable and vectors is None:
            vectors = rff_embeddings(specs, self.embedding_dimension, self.embedding_seed)
        slots = np.array([self._take_slot() for _ in items], dtype=np.int64)
        self._grow(int(slots.max()) + 1)
        for slot, (learnware_id, spec) in zip(slots.tolist(), items, strict=True):
            self.ids[slot] = learnware_id
            self.slot_of[learnware_id] = slot
            self.languages[slot] = frozenset(spec.language)
            if self.key.embeddable:
                z = np.ascontiguousarray(spec.flat_z, dtype=np.float32)
                beta = np.asarray(spec.beta, dtype=np.float64)
                self.points[slot], self.betas[slot] = z, beta
                self.point_bytes += z.nbytes + beta.nbytes
            else:
                self.specs[slot] = spec
                self.point_bytes += spec.z.nbytes + spec.beta.nbytes
        self.alive[slots] = True
        self.self_products[slots] = self_products
        self.self_product_sum += float(np.sum(self_products))
        if self.key.embeddable:
            assert vectors is not None and self._near is not None
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            self.vectors[slots] = vectors
            self.vector_norms[slots] = np.einsum("ij,ij->i", vectors, vectors)
            self.vector_sum += vectors.sum(axis=0, dtype=np.float64)
            if self._needs_rebuild():
                self._rebuild()
            else:
                self._near.add_with_ids(vectors, slots)
                if self._far is not None:
                    self._far.add_with_ids(_augmented(vectors), slots)

    def remove(self, learnware_id: str) -> bool:
        slot = self.slot_of.pop(learnware_id, None)
        if slot is None:
            return False
        self.alive[slot] = False
        self.self_product_sum -= float(self.self_products[slot])
        self.ids[slot] = None
        self.languages[slot] = frozenset()
        if self.key.embeddable:
            assert self._near is not None
            self.vector_sum -= self.vectors[slot]
            points, beta = self.points[slot], self.betas[slot]
            assert points is not None and beta is not None
            self.point_bytes -= points.nbytes + beta.nbytes
            self.points[slot] = self.betas[slot] = None
            ids = np.array([slot], dtype=np.int64)
            self._near.remove_ids(ids)
            if self._far is not None:
                self._far.remove_ids(ids)
        else:
            spec = self.specs[slot]
            assert spec is not None
            self.point_bytes -= spec.z.nbytes + spec.beta.nbytes
            self.specs[slot] = None
        self.free.append(slot)
        if not self.slot_of:  # keep the sums exact when the partition empties
            self.vector_sum[:] = 0.0
            self.self_product_sum = 0.0
        return True

    def _needs_rebuild(self) -> bool:
        n = self.count
        if self.nlist == 0:
            return n > self.flat_max
        return n > IVF_REGROW * self._trained_at

    def _rebuild(self) -> None:
        """(Re)build FAISS from our vectors: flat while small, IVF (re)trained beyond."""
        slots = np.flatnonzero(self.alive).astype(np.int64)
        vectors = self.vectors[slots]
        dim = self.embedding_dimension
        n = slots.size
        if n <= self.flat_max:
            self.nlist, self._far, self._trained_at = 0, None, 0
            self._near = faiss.index_factory(dim, "IDMap2,Flat")
            self._near.add_with_ids(vectors, slots)
            return
        nlist = max(64, int(math.sqrt(n)))
        rng = np.random.default_rng(self.embedding_seed)
        sample_size = min(n, TRAIN_POINTS_PER_LIST * nlist)
        sample = vectors[np.sort(rng.choice(n, size=sample_size, replace=False))]
        near = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_L2)
        far = faiss.index_factory(dim + 1, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        for index, data in ((near, sample), (far, _augmented(sample))):
            ivf = faiss.extract_index_ivf(index)
            ivf.cp.niter = KMEANS_ITERATIONS
            ivf.cp.seed = self.embedding_seed
            index.train(data)
        near.add_with_ids(vectors, slots)
        far.add_with_ids(_augmented(vectors), slots)
        self._near, self._far, self.nlist, self._trained_at = near, far, nlist, n

    def rebuild_if_needed(self) -> None:
        if self.key.embeddable and (self._needs_rebuild() or (self.nlist and self.count == 0)):
            self._rebuild()

    # -- search -------------------------------------------------------------------------------

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.alive).astype(np.int64)

    def exact_cross(self, user: UserSpec, slots: np.ndarray) -> np.ndarray:
        """<u, l> for each slot, exact, float64 (the learnware's gamma = the partition's)."""
        if slots.size == 0:
            return np.zeros(0)
        if not self.key.embeddable:
            out = np.empty(slots.size)
            for i, slot in enumerate(slots.tolist()):
                spec = self.specs[slot]
                assert spec is not None
                out[i] = inner_product(spec, user.spec)
            return out
        zu = user.z.astype(np.float64, copy=False)
        zu_sq = (zu * zu).sum(axis=1)
        gamma = self.key.gamma
        out = np.empty(slots.size)
        order = slots.tolist()
        start = 0
        while start < len(order):
            block: list[int] = []
            points = 0
            for slot in order[start:]:
                block.append(slot)
                points += self.points[slot].shape[0]  # type: ignore[union-attr]
                if points >= _CHUNK_POINTS:
                    break
            z = np.concatenate([self.points[s] for s in block]).astype(np.float64)  # type: ignore[misc]
            beta = np.concatenate([self.betas[s] for s in block])  # type: ignore[misc]
            sizes = np.array([self.points[s].shape[0] for s in block])  # type: ignore[union-attr]
            z_sq = (z * z).sum(axis=1)
            if gamma * (float(zu_sq.max()) + float(z_sq.max())) < _FACTORED_LIMIT:
                # k(a, b) = e^{-g|a|^2} e^{-g|b|^2} e^{2g a.b}: one product, one exp, no
                # squared-distance matrix; every factor stays within float64's range.
                products = (2.0 * gamma * zu) @ z.T
                np.exp(products, out=products)
                weighted = ((user.beta * np.exp(-gamma * zu_sq)) @ products) * (
                    beta * np.exp(-gamma * z_sq)
                )
            else:
                sq = zu_sq[:, None] - 2.0 * (zu @ z.T) + z_sq[None, :]
                weighted = (user.beta @ np.exp(-gamma * sq)) * beta
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            out[start : start + len(block)] = np.add.reduceat(weighted, starts)
            start += len(block)
        return out

    def gram_row(self, slot: int, slots: np.ndarray) -> np.ndarray:
        """<l_slot, l_s> for each s, exact."""
        if not self.key.embeddable:
            spec = self.specs[slot]
            assert spec is not None
            return self.exact_cross(UserSpec(spec, 0.0), slots)
        points, beta = self.points[slot], self.betas[slot]
        assert points is not None and beta is not None
        return self.exact_cross(UserSpec(_as_spec(points, beta, self.key.gamma), 0.0), slots)

    def search(
        self,
        user: UserSpec,
        keep: np.ndarray | None,
        *,
        candidates: int,
        needed: int,
        far_candidates: int = FAR_CANDIDATES,
    ) -> Ranked:
        """Rank the learnwares (all, or the slots in `keep`) by exact squared MMD.

        The `candidates` nearest by embedding distance are re-ranked exactly. The embedding
        error is then measured on them (exact minus estimated distance: mean `shift`, spread
        `sigma`); while a learnware not yet re-ranked could still be among the `needed` best
        (its estimate + shift is within 4 sigma of the needed-th exact distance), the
        retrieval is widened (up to `EXTEND_ROUNDS` times, 4x each) and those are re-ranked
        too."""
        slots = self.live_slots() if keep is None else keep
        count = int(slots.size)
        if count == 0:
            empty = np.zeros(0)
            return Ranked(np.zeros(0, dtype=np.int64), empty, empty, 0.0, 0.0, 0.0, 0)
        if not self.key.embeddable or count <= candidates:
            ranked = slots
            near = slots
            mean_cross: float | None = None
            cross = self.exact_cross(user, ranked)
        else:
            retrieval = _Retrieval(self, user, keep)
            near, estimate = retrieval.nearest(candidates)
            far = retrieval.farthest(far_candidates)
            mean_cross = retrieval.mean_cross()
            ranked = np.unique(np.concatenate([near, far]))
            cross = self.exact_cross(user, ranked)
            exact_near = (
                user.self_product
                - 2.0 * cross[np.searchsorted(ranked, near)]
                + self.self_products[near]
            )
            residual = exact_near - estimate
            shift, sigma = float(residual.mean()), float(residual.std())
            want = min(needed, exact_near.size)
            bound = (
                float(np.partition(exact_near, want - 1)[want - 1]) + ERROR_MARGIN * sigma - shift
            )
            k = candidates
            seen = np.zeros(len(self.ids), dtype=bool)  # by slot: re-ranked already
            seen[ranked] = True
            for _ in range(EXTEND_ROUNDS):
                if estimate.size == 0 or float(estimate.max()) > bound or k >= count:
                    break
                k = min(4 * k, count)
                wider, wider_estimate = retrieval.nearest(k)
                extra = wider[(wider_estimate <= bound) & ~seen[wider]]
                near, estimate = wider, wider_estimate
                if extra.size:
                    seen[extra] = True
                    ranked = np.concatenate([ranked, extra])
                    cross = np.concatenate([cross, self.exact_cross(user, extra)])
        mmd2 = user.self_product - 2.0 * cross + self.self_products[ranked]
        order = np.lexsort((ranked, mmd2))  # ties: by slot
        ranked, cross, mmd2 = ranked[order], cross[order], mmd2[order]
        minimum, maximum = float(mmd2[0]), float(mmd2.max())
        if mean_cross is None:  # every filtered learnware was ranked exactly
            mean = float(mmd2.mean())
        else:
            mean_self = (
                self.self_product_sum / count
                if keep is None
                else float(self.self_products[slots].mean())
            )
            mean = min(max(user.self_product - 2.0 * mean_cross + mean_self, minimum), maximum)
        in_near = np.zeros(len(self.ids), dtype=bool)
        in_near[near] = True
        in_near = in_near[ranked]
        is_near = in_near | (mmd2 <= float(mmd2[in_near].max()))
        return Ranked(ranked[is_near], mmd2[is_near], cross[is_near], minimum, maximum, mean, count)


class _Retrieval:
    """Embedding-space queries of one search: FAISS over the whole partition, or a scan of
    the kept slots' embeddings (computed once)."""

    def __init__(self, partition: Partition, user: UserSpec, keep: np.ndarray | None) -> None:
        assert user.vector is not None
        self.partition = partition
        self.keep = keep
        self.query = np.ascontiguousarray(user.vector[None, :], dtype=np.float32)
        self.user_norm = float(user.vector.astype(np.float64) @ user.vector)
        self._estimate: np.ndarray | None = None  # over keep, or over every slot in use
        self._live = 0  # finite entries of _estimate
        self._found: tuple[np.ndarray, np.ndarray] | None = None  # IVF: nearest, ascending
        self._fetched = 0

    def _scan(self) -> np.ndarray:
        if self._estimate is None:
            p = self.partition
            if self.keep is None:
                used = len(p.ids)
                estimate = p.vector_norms[:used] - 2.0 * (p.vectors[:used] @ self.query[0])
                estimate = estimate.astype(np.float64) + self.user_norm
                estimate[~p.alive[:used]] = np.inf
                self._live = p.count
            else:
                products = p.vectors[self.keep] @ self.query[0]
                estimate = p.vector_norms[self.keep] - 2.0 * products + self.user_norm
                estimate = estimate.astype(np.float64)
                self._live = estimate.size
            self._estimate = estimate
        return self._estimate

    def nearest(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest slots by estimated squared MMD, with their estimates.

        A flat partition is scanned once per search (the same scan serves the farthest
        learnwares and every widening); an IVF partition is searched once for more than the
        first retrieval needs, and again only when a widening goes beyond that."""
        p = self.partition
        if self.keep is None and p.nlist:
            assert p._near is not None
            if self._found is None or (k > self._found[0].size and self._fetched < p.count):
                fetch = min(p.count, max(k, NEAREST_PREFETCH * k))
                params = faiss.SearchParametersIVF(nprobe=p._nprobe())
                distances, found = p._near.search(self.query, fetch, params=params)
                mask = found[0] >= 0
                self._found = (
                    found[0][mask].astype(np.int64),
                    distances[0][mask].astype(np.float64),
                )
                self._fetched = fetch
            slots, estimate = self._found
            return slots[:k], estimate[:k]
        estimate = self._scan()
        k = min(k, self._live)
        if k >= estimate.size:
            positions = np.arange(estimate.size)
        else:
            positions = np.argpartition(estimate, k - 1)[:k]
        if self.keep is None:
            return positions.astype(np.int64), estimate[positions]
        return self.keep[positions], estimate[positions]

    def farthest(self, k: int) -> np.ndarray:
        p = self.partition
        if self.keep is None and p._far is not None:
            far_query = np.concatenate([-2.0 * self.query, np.ones((1, 1), np.float32)], axis=1)
            params = faiss.SearchParametersIVF(nprobe=p._far_nprobe())
            _, found = p._far.search(far_query, k, params=params)
            return found[0][found[0] >= 0].astype(np.int64)
        estimate = self._scan()
        k = min(k, self._live)
        negated = np.where(np.isfinite(estimate), -estimate, np.inf)
        positions = np.argpartition(negated, k - 1)[:k]
        slots = positions.astype(np.int64) if self.keep is None else self.keep[positions]
        return slots[p.alive[slots]]

    def mean_cross(self) -> float:
        """Estimated mean of <u, l> over the kept learnwares."""
        p = self.partition
        if self.keep is None:
            return float(self.query[0].astype(np.float64) @ p.vector_sum) / p.count
        return float((p.vectors[self.keep] @ self.query[0]).mean())


def gaussian_self_products(specs: Sequence[RKMESpec], gamma: float) -> np.ndarray:
    """<s, s> for each spec (Gaussian kernel), batched over specs of the same size."""
    out = np.empty(len(specs))
    by_size: dict[int, list[int]] = {}
    for i, spec in enumerate(specs):
        by_size.setdefault(spec.flat_z.shape[0], []).append(i)
    for size, members in by_size.items():
        step = max(1, _CHUNK_POINTS // (size * size) * 16)
        for start in range(0, len(members), step):
            block = members[start : start + step]
            z = np.stack([specs[i].flat_z for i in block]).astype(np.float64)
            beta = np.stack([specs[i].beta for i in block]).astype(np.float64)
            norms = np.einsum("bkd,bkd->bk", z, z)
            sq = norms[:, :, None] - 2.0 * np.einsum("bkd,bjd->bkj", z, z) + norms[:, None, :]
            out[block] = np.einsum("bk,bkj,bj->b", beta, np.exp(-gamma * sq), beta)
    return out


def _augmented(vectors: np.ndarray) -> np.ndarray:
    """[v, |v|^2]: the inner product with [-2u, 1] is |u - v|^2 - |u|^2 (farthest = largest)."""
    norms = (vectors.astype(np.float64) ** 2).sum(axis=1, keepdims=True)
    return np.ascontiguousarray(np.concatenate([vectors, norms], axis=1), dtype=np.float32)


def _as_spec(points: np.ndarray, beta: np.ndarray, gamma: float) -> RKMESpec:
    return RKMESpec(z=points.astype(np.float64), beta=beta, gamma=gamma)
