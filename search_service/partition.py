"""One index partition: the learnwares whose specifications live in one feature space.

Table and text specs (Gaussian kernel) are embedded with random Fourier features
(`lwdock.rkme.embedding.rff_embeddings`, one seed for the whole suite), so that the squared
L2 distance between two embeddings estimates their squared MMD. Each learnware keeps two:
a fine embedding of `rescore_dimension` (1,024) features, stored as int8 codes with one
float32 scale per learnware (1 KiB; the quantisation error is far below the embedding's own),
and the FAISS vector: the first `embedding_dimension` (256) features of the stored fine
embedding, scaled (a prefix of random features is itself a random-feature embedding, with a
larger error).

A search: FAISS retrieves candidates by the FAISS vectors (an exact scan while the partition
holds up to `flat_max` learnwares; beyond, an inverted file `IVF<sqrt n>,PQ<d/4>x4fs` of 4-bit
fast-scan product codes, whose candidates are re-ranked by their float32 FAISS vectors;
retrained when the partition has grown or shrunk fourfold, flat again when it has shrunk
within flat_max); the fine embeddings re-score them; the best of those are
re-ranked with the exact squared MMD of their reduced sets (float32 z, float64 beta, float64
arithmetic): <u,u> - 2 <u,l> + <l,l>, with <l,l> computed once at insert. While the embedding
error (measured on the exactly ranked: mean `shift`, spread `sigma`) could hide one of the
needed results among the others, those are ranked exactly too (fine estimate within
`ERROR_MARGIN` sigma) and the retrieval is widened (FAISS distance within the margin).

The reference score needs the minimum, mean and maximum distance over the filtered set: the
minimum is the exact best candidate; the mean is <u,u> - 2 mean<u,l> + mean<l,l>, with
mean<l,l> exact (a running sum) and mean<u,l> estimated from the running sum of fine
embeddings (exact when every filtered learnware was re-ranked); the maximum is the exact
distance of the farthest learnwares found: by a scan of the FAISS vectors while the partition
is flat (or filtered), among the `FAR_POOL` learnwares of largest <l,l> under IVF.

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
from search_service.kernels import cross_matrix, gaussian_self_products
from search_service.semantic import SemanticColumns, SemanticRecord

FLAT_MAX = 32_768  # learnwares per partition before FAISS switches to IVF
IVF_REGROW = 4  # retrain the IVF index when the partition has grown this many times
KMEANS_ITERATIONS = 10
TRAIN_POINTS_PER_LIST = 40
RESCORE_DIMENSION = 1024  # features of the fine embedding (int8 codes, 1 KiB a learnware)
RESCORE_MIN = 200  # learnwares retrieved by FAISS and re-scored with the fine embedding
EXACT_MIN = 20  # learnwares re-ranked exactly per search, at least
EXACT_EXTRA = 10  # ... and at least this many beyond the results needed
FAR_CANDIDATES = 2  # farthest learnwares re-ranked exactly for the score's maximum
FAR_POOL = 256  # IVF: learnwares of largest <l, l> among which the farthest are sought
# A filter keeping more learnwares than this searches the IVF index restricted to them (an
# IDSelector); up to this many, their FAISS vectors are scanned.
FILTER_SCAN_MAX = 4096
MEAN_SAMPLE = 4096  # filtered IVF: kept learnwares whose vectors estimate the score's mean
# IVF lists hold 4-bit fast-scan product codes (one 4-bit code per 4 dimensions, scanned
# with SIMD table look-ups: ~15x faster than 8-bit scalar codes here, so that 4x more lists
# are probed for less time); the REFINE_FACTOR x k nearest by those codes are re-ranked by
# the float32 FAISS vectors the partition keeps anyway, and the k best returned. The codes
# err, and the more learnwares crowd near a query, the further down the codes' order one of
# the nearest falls: at 10^6 (factor 2), one of a query's true 10 best, 161st by its vector,
# was past the 800th by its code. Measured (bench/search.py's queries against the exact
# ranking): at 10^5, factor 2 lost one of the true top 10 in 30 queries, 4 none at the same
# CPU time; at 10^6, factor 4 lost one in 8 queries, 8 none.
IVF_SUBVECTOR = 4
REFINE_FACTOR = 4
REFINE_FACTOR_CROWDED = 8  # partitions of more than REFINE_CROWDED learnwares
REFINE_CROWDED = 1 << 17
EXTEND_ROUNDS = 3  # widenings of the retrieval while the embedding error could hide a result
ERROR_MARGIN = 3.0  # in standard deviations of the measured embedding error
POOL_MARGIN = 1.0  # the same for the mixture's candidates (only which ones, not their order)
IMAGE_SCORE_SCALE = 5e-5  # image distances d -> 1 - exp(-d / scale) before scoring


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
    fine: np.ndarray | None = None  # float32 [rescore_dimension], embeddable partitions
    vector: np.ndarray | None = None  # float32 [embedding_dimension]: the FAISS query

    @property
    def z(self) -> np.ndarray:
        return self.spec.flat_z

    @property
    def beta(self) -> np.ndarray:
        return self.spec.beta


@dataclass
class Ranked:
    """One partition search: the exactly re-ranked learnwares, best first, and the others
    retrieved (ranked by their fine-embedding estimate) for the mixture's candidates."""

    slots: np.ndarray  # int64
    mmd2: np.ndarray  # float64
    cross: np.ndarray  # <u, l>
    # minimum, maximum and mean of the score distances (`Partition.score_distances`) over the
    # learnwares that passed the filters
    minimum: float
    maximum: float
    mean: float
    count: int  # learnwares that passed the filters
    rest: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rest_estimate: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class Partition:
    key: PartitionKey
    embedding_dimension: int
    embedding_seed: int
    flat_max: int = FLAT_MAX
    nprobe: int = 0  # 0 = automatic
    rescore_dimension: int = RESCORE_DIMENSION
    ids: list[str | None] = field(default_factory=list)
    slot_of: dict[str, int] = field(default_factory=dict)
    points: list[np.ndarray | None] = field(default_factory=list)
    betas: list[np.ndarray | None] = field(default_factory=list)
    languages: list[frozenset[str]] = field(default_factory=list)
    specs: list[RKMESpec | None] = field(default_factory=list)  # image partitions only
    free: list[int] = field(default_factory=list)
    # the Class and Tag fields by slot, for the semantic filter
    semantics: SemanticColumns = field(default_factory=SemanticColumns, repr=False)

    def __post_init__(self) -> None:
        embeddable = self.key.embeddable
        if embeddable and not 1 <= self.embedding_dimension <= self.rescore_dimension:
            raise ValueError(
                f"embedding dimension {self.embedding_dimension} must be in "
                f"[1, rescore dimension {self.rescore_dimension}]"
            )
        dim = self.embedding_dimension if embeddable else 0
        fine_dim = self.rescore_dimension if embeddable else 0
        self.vectors = np.zeros((0, dim), dtype=np.float32)  # FAISS vectors
        self.vector_norms = np.zeros(0, dtype=np.float32)  # |v|^2
        self.fine = np.zeros((0, fine_dim), dtype=np.int8)  # codes; value = code x scale
        self.fine_scales = np.zeros(0, dtype=np.float32)
        self.fine_norms = np.zeros(0, dtype=np.float32)
        self.self_products = np.zeros(0)
        self.alive = np.zeros(0, dtype=bool)
        self.fine_sum = np.zeros(fine_dim)
        self.self_product_sum = 0.0
        self.point_bytes = 0
        self._near: faiss.Index | None = None
        self._far_pool: np.ndarray | None = None
        self._trained_at = 0
        self.nlist = 0
        if embeddable:
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
            return f"IVF{self.nlist},{self.ivf_codes}(nprobe={self._nprobe()})"
        return "IDMap2,Flat"

    @property
    def memory_bytes(self) -> int:
        """Vectors (ours and FAISS's), reduced sets and per-learnware arrays."""
        alive = self.count
        total = self.point_bytes + self.self_products.nbytes + self.alive.nbytes
        if self.key.embeddable:
            # FAISS's codes: float32 vectors (flat), or 4 bits per IVF_SUBVECTOR dimensions
            # (fast-scan PQ), or a byte per dimension (SQ8)
            if not self.nlist:
                code_bytes = 4 * self.embedding_dimension
            elif self.ivf_codes == "SQ8":
                code_bytes = self.embedding_dimension
            else:
                code_bytes = self.embedding_dimension // IVF_SUBVECTOR // 2
            total += self.vectors.nbytes + alive * code_bytes
            total += self.fine.nbytes + self.fine_scales.nbytes + self.fine_norms.nbytes
            total += self.vector_norms.nbytes
        return total

    def far_pool(self) -> np.ndarray:
        """The FAR_POOL live slots of largest <l, l> (cached until the partition changes)."""
        if self._far_pool is None:
            self._far_pool = self.largest_self_products(self.live_slots())
        return self._far_pool

    def largest_self_products(self, slots: np.ndarray) -> np.ndarray:
        """The FAR_POOL of the slots with the largest <l, l> (all of them if fewer), sorted."""
        if slots.size <= FAR_POOL:
            return slots
        largest = np.argpartition(-self.self_products[slots], FAR_POOL - 1)[:FAR_POOL]
        return np.sort(slots[largest])

    def score_distances(self, mmd2: np.ndarray | float) -> np.ndarray:
        """The distances the reference's score is computed from: the squared MMD, except for
        image specs, which the reference maps to 1 - exp(-d / 5e-5) first (its
        `EasyStatSearcher`; REFERENCE.md §7.4). That map saturates: every squared MMD above
        ~0.002 becomes exactly 1.0, so in a market of such image learnwares every score is 1
        and the mixture is dropped, as the reference's; `mmd2` and `similarity` still tell
        them apart."""
        values = np.asarray(mmd2, dtype=np.float64)
        if self.key.spec_type is SpecType.IMAGE:
            return 1.0 - np.exp(-values / IMAGE_SCORE_SCALE)
        return values

    @property
    def ivf_codes(self) -> str:
        """The codes of IVF lists: fast-scan PQ where the dimension allows an even number
        of 4-dimension subvectors, else 8-bit scalar quantisation."""
        if self.embedding_dimension % (2 * IVF_SUBVECTOR) == 0:
            return f"PQ{self.embedding_dimension // IVF_SUBVECTOR}x4fs"
        return "SQ8"

    def _nprobe(self) -> int:
        return self.nprobe or min(self.nlist, max(64, self.nlist // 4))

    # -- embeddings ---------------------------------------------------------------------------

    def embed(self, specs: Sequence[RKMESpec]) -> np.ndarray:
        """Fine embeddings, float32 [n, rescore_dimension]."""
        return rff_embeddings(specs, self.rescore_dimension, self.embedding_seed)

    def faiss_vectors(self, fine: np.ndarray) -> np.ndarray:
        """The FAISS vectors of fine embeddings: their first embedding_dimension features,
        scaled by sqrt(rescore / embedding dimension) (a random-feature embedding of that
        dimension), float32."""
        scale = math.sqrt(self.rescore_dimension / self.embedding_dimension)
        prefix = np.asarray(fine, dtype=np.float32)[..., : self.embedding_dimension]
        return np.ascontiguousarray(prefix * np.float32(scale))

    def user_vectors(self, spec: RKMESpec) -> tuple[np.ndarray, np.ndarray]:
        """(fine embedding, FAISS vector) of a user's spec."""
        fine = self.embed([spec])[0]
        return fine, self.faiss_vectors(fine)

    # -- changes ------------------------------------------------------------------------------

    def _grow(self, needed: int) -> None:
        capacity = self.alive.shape[0]
        if needed <= capacity:
            return
        new = max(needed, 2 * capacity, 64)
        extra = new - capacity

        def grown(array: np.ndarray) -> np.ndarray:
            bigger = np.zeros((new, *array.shape[1:]), dtype=array.dtype)
            bigger[:capacity] = array
            return bigger

        self.vectors = grown(self.vectors)
        self.fine = grown(self.fine)
        self.vector_norms = np.concatenate([self.vector_norms, np.zeros(extra, np.float32)])
        self.fine_norms = np.concatenate([self.fine_norms, np.zeros(extra, np.float32)])
        self.fine_scales = np.concatenate([self.fine_scales, np.zeros(extra, np.float32)])
        self.self_products = np.concatenate([self.self_products, np.zeros(extra)])
        self.alive = np.concatenate([self.alive, np.zeros(extra, dtype=bool)])

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
        records: Sequence[SemanticRecord],
        fine: np.ndarray | FineCodes | None = None,
        self_products: np.ndarray | None = None,
    ) -> None:
        """Insert or replace learnwares, with their semantic records (for the filter's
        columns). `fine` (fine embeddings, or their codes) and `self_products` may be given
        (a snapshot, a bulk build); otherwise they are computed here."""
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
        if self.key.embeddable and fine is None:
            fine = self.embed(specs)
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
        self.semantics.assign(slots.tolist(), records)
        self._far_pool = None
        self.self_products[slots] = self_products
        self.self_product_sum += float(np.sum(self_products))
        if self.key.embeddable:
            assert fine is not None and self._near is not None
            codes = fine if isinstance(fine, FineCodes) else FineCodes.quantize(fine)
            stored = codes.values()  # what is stored is what is measured
            self.fine[slots] = codes.codes
            self.fine_scales[slots] = codes.scales
            self.fine_norms[slots] = np.einsum("ij,ij->i", stored, stored)
            self.fine_sum += stored.sum(axis=0, dtype=np.float64)
            vectors = self.faiss_vectors(stored)
            self.vectors[slots] = vectors
            self.vector_norms[slots] = np.einsum("ij,ij->i", vectors, vectors)
            if self._needs_rebuild():
                self._rebuild()
            else:
                self._near.add_with_ids(vectors, slots)

    def remove(self, learnware_id: str) -> bool:
        slot = self.slot_of.pop(learnware_id, None)
        if slot is None:
            return False
        self.alive[slot] = False
        self._far_pool = None
        self.self_product_sum -= float(self.self_products[slot])
        self.ids[slot] = None
        self.languages[slot] = frozenset()
        if self.key.embeddable:
            assert self._near is not None
            stored = FineCodes(self.fine[slot : slot + 1], self.fine_scales[slot : slot + 1])
            self.fine_sum -= stored.values()[0].astype(np.float64)
            points, beta = self.points[slot], self.betas[slot]
            assert points is not None and beta is not None
            self.point_bytes -= points.nbytes + beta.nbytes
            self.points[slot] = self.betas[slot] = None
            ids = np.array([slot], dtype=np.int64)
            self._near.remove_ids(ids)
        else:
            spec = self.specs[slot]
            assert spec is not None
            self.point_bytes -= spec.z.nbytes + spec.beta.nbytes
            self.specs[slot] = None
        self.free.append(slot)
        if not self.slot_of:  # keep the sums exact when the partition empties
            self.fine_sum[:] = 0.0
            self.self_product_sum = 0.0
        return True

    def _needs_rebuild(self) -> bool:
        """Flat past flat_max learnwares; IVF retrained after growing or shrinking fourfold
        since its training (back to flat if it is then within flat_max)."""
        n = self.count
        if self.nlist == 0:
            return n > self.flat_max
        return n > IVF_REGROW * self._trained_at or IVF_REGROW * n < self._trained_at

    def _rebuild(self) -> None:
        """(Re)build FAISS from our vectors: flat while small, IVF (re)trained beyond."""
        slots = np.flatnonzero(self.alive).astype(np.int64)
        vectors = self.vectors[slots]
        dim = self.embedding_dimension
        n = slots.size
        if n <= self.flat_max:
            self.nlist, self._trained_at = 0, 0
            self._near = faiss.index_factory(dim, "IDMap2,Flat")
            self._near.add_with_ids(vectors, slots)
            return
        nlist = max(64, int(math.sqrt(n)))
        rng = np.random.default_rng(self.embedding_seed)
        sample_size = min(n, TRAIN_POINTS_PER_LIST * nlist)
        sample = vectors[np.sort(rng.choice(n, size=sample_size, replace=False))]
        near = faiss.index_factory(dim, f"IVF{nlist},{self.ivf_codes}", faiss.METRIC_L2)
        ivf = faiss.extract_index_ivf(near)
        ivf.cp.niter = KMEANS_ITERATIONS
        ivf.cp.seed = self.embedding_seed
        near.train(sample)
        near.add_with_ids(vectors, slots)
        self._near, self.nlist, self._trained_at = near, nlist, n

    def rebuild_if_needed(self) -> None:
        if self.key.embeddable and (self._needs_rebuild() or (self.nlist and self.count == 0)):
            self._rebuild()

    # -- search -------------------------------------------------------------------------------

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.alive).astype(np.int64)

    def fine_estimate(self, user: UserSpec, slots: np.ndarray) -> np.ndarray:
        """Squared MMD estimated from the fine embeddings, float64."""
        assert user.fine is not None
        products = (self.fine[slots].astype(np.float32) @ user.fine) * self.fine_scales[slots]
        user_norm = float(user.fine.astype(np.float64) @ user.fine)
        return self.fine_norms[slots] - 2.0 * products.astype(np.float64) + user_norm

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
        points = [self.points[s] for s in slots.tolist()]
        betas = [self.betas[s] for s in slots.tolist()]
        return cross_matrix([user.z], [user.beta], points, betas, self.key.gamma)[0]  # type: ignore[arg-type]

    def gram_block(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """<l_r, l_c> for each slot r in rows and c in columns, exact, float64 [rows, columns]."""
        if not self.key.embeddable:
            out = np.empty((rows.size, columns.size))
            for i, slot in enumerate(rows.tolist()):
                spec = self.specs[slot]
                assert spec is not None
                out[i] = self.exact_cross(UserSpec(spec, 0.0), columns)
            return out
        return cross_matrix(
            [self.points[s] for s in rows.tolist()],  # type: ignore[misc]
            [self.betas[s] for s in rows.tolist()],  # type: ignore[misc]
            [self.points[s] for s in columns.tolist()],  # type: ignore[misc]
            [self.betas[s] for s in columns.tolist()],  # type: ignore[misc]
            self.key.gamma,
        )

    def search(
        self,
        user: UserSpec,
        keep: np.ndarray | None,
        *,
        needed: int,
        pool: int = 0,
        exact_min: int = EXACT_MIN,
        far_candidates: int = FAR_CANDIDATES,
    ) -> Ranked:
        """Rank the learnwares (all, or the slots in `keep`) by exact squared MMD: the first
        `needed` exactly, with at least max(exact_min, needed + EXACT_EXTRA, pool) ranked
        exactly, and the `pool` best (the mixture's candidates) found exactly (within
        POOL_MARGIN sigma), not necessarily in order.

        FAISS retrieves max(RESCORE_MIN, 4 x that) learnwares, the fine embeddings re-score
        them and the best are ranked exactly. The embedding errors are then measured on them
        (exact minus estimate: mean `shift`, spread `sigma`, for the fine estimate and for the
        FAISS one); while a learnware not ranked exactly could still be among the `needed`
        best (its estimate + shift within ERROR_MARGIN sigma of the needed-th exact
        distance), it is ranked exactly too, and while one not retrieved could (the last
        FAISS distance within the margin), the retrieval is widened (up to EXTEND_ROUNDS
        times, 4x each)."""
        slots = self.live_slots() if keep is None else keep
        count = int(slots.size)
        if count == 0:
            empty = np.zeros(0)
            return Ranked(np.zeros(0, dtype=np.int64), empty, empty, 0.0, 0.0, 0.0, 0)
        base = max(exact_min, needed + EXACT_EXTRA, pool)
        if not self.key.embeddable or count <= 2 * base:
            cross = self.exact_cross(user, slots)
            mmd2 = user.self_product - 2.0 * cross + self.self_products[slots]
            order = np.lexsort((slots, mmd2))
            scored = self.score_distances(mmd2)
            return Ranked(
                slots[order],
                mmd2[order],
                cross[order],
                float(scored.min()),
                float(scored.max()),
                float(scored.mean()),
                count,
            )
        retrieval = _Retrieval(self, user, keep)
        k = min(count, max(RESCORE_MIN, 4 * base))
        found, coarse = retrieval.nearest(k)
        fine = self.fine_estimate(user, found)
        first = np.argsort(fine, kind="stable")[:base]
        exact = _Exact(self, user)
        exact.add(found[first], fine[first], coarse[first])
        for widenings in range(EXTEND_ROUNDS + 1):
            limit = exact.limit(needed, pool, "fine")
            pending = (fine <= limit) & ~exact.has(found)
            if pending.any():
                exact.add(found[pending], fine[pending], coarse[pending])
            widen = (
                widenings < EXTEND_ROUNDS
                and k < count
                and float(coarse.max()) <= exact.limit(needed, pool, "coarse")
                and not (retrieval.ivf and found.size < k)
            )
            if not widen:
                break
            k = min(4 * k, count)
            found, coarse = retrieval.nearest(k)
            fine = self.fine_estimate(user, found)
        far = retrieval.farthest(far_candidates)
        far = far[~exact.has(far)]
        retrieved_max = float(exact.mmd2().max())
        if far.size:
            exact.add(far, None, None)
        ranked, mmd2, cross = exact.ranked()
        minimum, maximum = float(mmd2[0]), float(mmd2.max())
        mean_self = (
            self.self_product_sum / count
            if keep is None
            else float(self.self_products[slots].mean())
        )
        mean_cross = retrieval.mean_cross()
        mean = min(max(user.self_product - 2.0 * mean_cross + mean_self, minimum), maximum)
        listed = mmd2 <= retrieved_max  # far learnwares are listed only where they belong
        rest = ~exact.has(found)
        order = np.argsort(fine[rest], kind="stable")
        return Ranked(
            ranked[listed],
            mmd2[listed],
            cross[listed],
            minimum,
            maximum,
            mean,
            count,
            rest=found[rest][order],
            rest_estimate=fine[rest][order],
        )


@dataclass(frozen=True)
class FineCodes:
    """Fine embeddings as int8 codes [n, D] and one float32 scale per row (value = code x
    scale, the row's largest magnitude = 127 x scale)."""

    codes: np.ndarray
    scales: np.ndarray

    @classmethod
    def quantize(cls, fine: np.ndarray) -> FineCodes:
        fine = np.asarray(fine, dtype=np.float32)
        largest = np.abs(fine).max(axis=1) if fine.size else np.zeros(fine.shape[0], np.float32)
        scales = np.where(largest > 0, largest / 127.0, 1.0).astype(np.float32)
        codes = np.clip(np.rint(fine / scales[:, None]), -127, 127).astype(np.int8)
        return cls(codes, scales)

    def values(self) -> np.ndarray:
        return self.codes.astype(np.float32) * self.scales[:, None]


class _Exact:
    """The exactly ranked learnwares of one search, with the estimates they had."""

    def __init__(self, partition: Partition, user: UserSpec) -> None:
        self.partition = partition
        self.user = user
        self.seen = np.zeros(len(partition.ids), dtype=bool)
        self.slots: list[np.ndarray] = []
        self.cross: list[np.ndarray] = []
        self.estimates: dict[str, list[np.ndarray]] = {"fine": [], "coarse": []}
        self.measured: list[np.ndarray] = []  # exact squared MMD of those with estimates

    def has(self, slots: np.ndarray) -> np.ndarray:
        return self.seen[slots]

    def add(self, slots: np.ndarray, fine: np.ndarray | None, coarse: np.ndarray | None) -> None:
        cross = self.partition.exact_cross(self.user, slots)
        self.seen[slots] = True
        self.slots.append(slots)
        self.cross.append(cross)
        if fine is not None and coarse is not None:
            self.estimates["fine"].append(fine)
            self.estimates["coarse"].append(coarse)
            self.measured.append(self._mmd2(slots, cross))

    def _mmd2(self, slots: np.ndarray, cross: np.ndarray) -> np.ndarray:
        return self.user.self_product - 2.0 * cross + self.partition.self_products[slots]

    def mmd2(self) -> np.ndarray:
        return np.concatenate(self.measured)

    def limit(self, needed: int, pool: int, kind: str) -> float:
        """The largest estimate of this kind whose learnware could still be among the
        `needed` best (the needed-th exact squared MMD so far + ERROR_MARGIN sigma - shift of
        exact - estimate) or among the `pool` best (with POOL_MARGIN sigma)."""
        values = self.mmd2()
        residual = values - np.concatenate(self.estimates[kind])
        sigma, shift = float(residual.std()), float(residual.mean())
        ordered = np.sort(values)
        limit = float(ordered[min(needed, values.size) - 1]) + ERROR_MARGIN * sigma - shift
        if pool:
            pool_limit = float(ordered[min(pool, values.size) - 1]) + POOL_MARGIN * sigma - shift
            limit = max(limit, pool_limit)
        return limit

    def ranked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        slots = np.concatenate(self.slots)
        cross = np.concatenate(self.cross)
        mmd2 = self._mmd2(slots, cross)
        order = np.lexsort((slots, mmd2))  # ties: by slot
        return slots[order], mmd2[order], cross[order]


class _Retrieval:
    """Embedding-space queries of one search, by how the kept learnwares are reached:

    - `ivf`: FAISS's IVF index, over the whole partition or, for a filter keeping more than
      FILTER_SCAN_MAX learnwares, restricted to the kept ones by an `IDSelectorBitmap` (with
      nprobe raised by the share of the partition the filter drops, so that as many kept
      learnwares are probed as an unfiltered search probes learnwares);
    - `scan`: the FAISS vectors of every learnware (flat partitions) or of the kept ones,
      computed once per search (the same scan serves the farthest learnwares and every
      widening).
    """

    def __init__(self, partition: Partition, user: UserSpec, keep: np.ndarray | None) -> None:
        assert user.vector is not None and user.fine is not None
        self.partition = partition
        self.keep = keep
        self.user = user
        self.query = np.ascontiguousarray(user.vector[None, :], dtype=np.float32)
        self.user_norm = float(user.vector.astype(np.float64) @ user.vector)
        self._estimate: np.ndarray | None = None  # over keep, or over every slot in use
        self._products: np.ndarray | None = None  # <v, query> over keep
        self._live = 0  # finite entries of _estimate
        self.ivf = bool(partition.nlist) and (keep is None or keep.size > FILTER_SCAN_MAX)
        self._params: faiss.SearchParametersIVF | None = None
        if self.ivf:
            nprobe = partition._nprobe()
            if keep is not None:
                mask = np.zeros(len(partition.ids), dtype=bool)
                mask[keep] = True
                self._bitmap = np.packbits(mask, bitorder="little")  # referenced while used
                self._selector = faiss.IDSelectorBitmap(self._bitmap)
                share = keep.size / max(partition.count, 1)
                nprobe = math.ceil(nprobe / share)
                self._params = faiss.SearchParametersIVF(
                    nprobe=min(partition.nlist, nprobe), sel=self._selector
                )
            else:
                self._params = faiss.SearchParametersIVF(nprobe=nprobe)

    def _distances(self, slots: np.ndarray) -> np.ndarray:
        """Squared distances of the slots' float32 FAISS vectors to the query, float64."""
        p = self.partition
        distance = p.vector_norms[slots] - 2.0 * (p.vectors[slots] @ self.query[0])
        return distance.astype(np.float64) + self.user_norm

    def _scan(self) -> np.ndarray:
        if self._estimate is None:
            p = self.partition
            used = len(p.ids)
            if self.keep is None:
                estimate = p.vector_norms[:used] - 2.0 * (p.vectors[:used] @ self.query[0])
                estimate = estimate.astype(np.float64) + self.user_norm
                estimate[~p.alive[:used]] = np.inf
                self._live = p.count
            else:
                if 2 * self.keep.size > used:  # one pass over all: no copy of the kept rows
                    self._products = (p.vectors[:used] @ self.query[0])[self.keep]
                else:
                    self._products = p.vectors[self.keep] @ self.query[0]
                estimate = p.vector_norms[self.keep] - 2.0 * self._products + self.user_norm
                estimate = estimate.astype(np.float64)
                self._live = estimate.size
            self._estimate = estimate
        return self._estimate

    def nearest(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest kept slots by FAISS-vector distance, with those distances."""
        p = self.partition
        if self.ivf:
            assert p._near is not None
            total = p.count if self.keep is None else self.keep.size
            factor = REFINE_FACTOR_CROWDED if p.count > REFINE_CROWDED else REFINE_FACTOR
            wanted = min(factor * k, total)
            _, found = p._near.search(self.query, wanted, params=self._params)
            slots = found[0][found[0] >= 0].astype(np.int64)
            distance = self._distances(slots)
            best = np.argsort(distance, kind="stable")[:k]
            return slots[best], distance[best]
        estimate = self._scan()
        k = min(k, self._live)
        if k >= estimate.size:
            positions = np.arange(estimate.size)
        else:
            positions = np.argpartition(estimate, k - 1)[:k]
        positions = positions[np.isfinite(estimate[positions])]
        if self.keep is None:
            return positions.astype(np.int64), estimate[positions]
        return self.keep[positions], estimate[positions]

    def farthest(self, k: int) -> np.ndarray:
        """The k farthest kept slots by FAISS-vector distance: exactly, from the scan, when
        scanning; under IVF among the FAR_POOL kept learnwares of largest <l, l>. The
        largest squared MMD, <u,u> + <l,l> - 2 <u,l>, belongs to a learnware far from the
        user (<u,l> near 0) with a large <l,l>: the pool holds those."""
        p = self.partition
        if self.ivf:
            pool = p.far_pool() if self.keep is None else p.largest_self_products(self.keep)
            return pool[np.argsort(-self._distances(pool), kind="stable")[:k]]
        estimate = self._scan()
        k = min(k, self._live)
        negated = np.where(np.isfinite(estimate), -estimate, np.inf)
        positions = np.argpartition(negated, k - 1)[:k]
        slots = positions.astype(np.int64) if self.keep is None else self.keep[positions]
        return slots[p.alive[slots]]

    def mean_cross(self) -> float:
        """Estimated mean of <u, l> over the kept learnwares: from the running sum of fine
        embeddings (no filter), the scan of the kept FAISS vectors, or (filtered IVF) the
        FAISS vectors of MEAN_SAMPLE kept learnwares evenly spaced among them."""
        p = self.partition
        if self.keep is None:
            assert self.user.fine is not None
            return float(self.user.fine.astype(np.float64) @ p.fine_sum) / p.count
        if self.ivf:
            step = max(1, self.keep.size // MEAN_SAMPLE)
            sample = self.keep[::step]
            return float((p.vectors[sample] @ self.query[0]).astype(np.float64).mean())
        self._scan()
        assert self._products is not None
        return float(self._products.mean())
