"""The search index as plain Python: rankings equal a brute-force exact-MMD scan (flat and
IVF), the reference's scores and semantic rules, the greedy mixture, empty results with a
reason, and snapshots that restore the same index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lwdock.errors import InvalidArgument
from lwdock.rkme.embedding import rff_embeddings
from lwdock.rkme.kernel import mmd2
from lwdock.rkme.spec import RKMESpec, SpecType
from search_service.index import LearnwareEntry, SearchIndex, SearchRequest
from search_service.mixture import greedy_mixture
from search_service.scoring import DistanceSummary, reference_score, similarity
from search_service.semantic import SemanticQuery, SemanticRecord, semantic_filter
from search_service.snapshot import load_snapshot, save_snapshot

D, K = 10, 20
M = 300


def synthetic(m: int, seed: int = 0, spread: float = 1.5) -> tuple[list[RKMESpec], np.ndarray]:
    """m table specs: K points around a random centre each, random non-negative weights."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, spread, (m, D))
    scales = rng.uniform(0.5, 1.5, m)
    specs = [
        RKMESpec(
            z=centres[i] + scales[i] * rng.normal(size=(K, D)),
            beta=rng.dirichlet(np.full(K, 5.0)),
            gamma=0.1,
        )
        for i in range(m)
    ]
    return specs, centres


def entries(specs: list[RKMESpec], **semantic: str) -> list[LearnwareEntry]:
    return [
        LearnwareEntry(
            f"lw-{i:08d}",
            SemanticRecord(
                data_type="Table",
                task="Classification" if i % 2 else "Regression",
                library="Scikit-learn",
                scenarios=("Business",) if i % 3 else ("Health", "Nature"),
                license="MIT",
                name=f"model {i}",
                description=f"synthetic learnware number {i}",
                **semantic,
            ),
            (spec,),
        )
        for i, spec in enumerate(specs)
    ]


def query_near(centre: np.ndarray, seed: int, points: int = 30) -> RKMESpec:
    rng = np.random.default_rng(seed)
    return RKMESpec(z=centre + rng.normal(size=(points, D)), beta=np.full(points, 1 / points))


def brute_force(specs: list[RKMESpec], user: RKMESpec, keep: list[int] | None = None) -> list:
    """(index, exact MMD^2) best first, by the reference's `learnware.dist(user)`."""
    indices = range(len(specs)) if keep is None else keep
    scored = [(i, mmd2(specs[i], user)) for i in indices]
    return sorted(scored, key=lambda item: item[1])


@pytest.fixture(scope="module")
def market() -> tuple[list[RKMESpec], np.ndarray]:
    return synthetic(M)


@pytest.mark.parametrize("flat_max", [10_000, 100], ids=["flat", "ivf"])
def test_ranking_equals_brute_force(market: tuple, flat_max: int) -> None:
    specs, centres = market
    index = SearchIndex(embedding_dimension=256, flat_max=flat_max, candidates=60)
    index.upsert_many(entries(specs))
    (partition,) = index.partitions.values()
    assert partition.index_type.startswith("IVF" if flat_max == 100 else "IDMap2,Flat")
    assert partition.count == M and partition.memory_bytes > M * K * D * 4
    rng = np.random.default_rng(7)
    for q in range(6):
        user = query_near(centres[rng.integers(M)], seed=q)
        result = index.search(SearchRequest(spec=user, page_size=10, max_mixture=1))
        expected = brute_force(specs, user)
        got = [(int(h.learnware_id[3:]), h.mmd2) for h in result.singles]
        assert [i for i, _ in got] == [i for i, _ in expected[:10]]
        np.testing.assert_allclose(
            [d for _, d in got], [d for _, d in expected[:10]], rtol=1e-6, atol=1e-9
        )
        assert result.candidate_count == M and result.mixture is None


def test_ivf_is_retrained_when_the_partition_shrinks_and_turns_flat_again(market: tuple) -> None:
    """IVF past flat_max; it stays IVF while the partition shrinks less than fourfold (no
    flip-flop at the threshold), then goes back to the flat scan, and the ranking still
    equals the brute force over the learnwares left."""
    specs, centres = market
    index = SearchIndex(flat_max=100)
    es = entries(specs)
    index.upsert_many(es)
    (partition,) = index.partitions.values()
    assert partition.index_type.startswith("IVF")
    for entry in es[:220]:  # 80 left: more than 300 / 4
        index.remove(entry.learnware_id)
    assert partition.index_type.startswith("IVF") and partition.count == 80
    for entry in es[220:240]:  # 60 left: shrunk fourfold, within flat_max
        index.remove(entry.learnware_id)
    assert partition.index_type == "IDMap2,Flat" and partition.nlist == 0
    left = list(range(240, M))
    for q in range(3):
        user = query_near(centres[left[q * 7]], seed=q)
        result = index.search(SearchRequest(spec=user, page_size=10, max_mixture=1))
        expected = brute_force(specs, user, keep=left)
        assert [int(h.learnware_id[3:]) for h in result.singles] == [i for i, _ in expected[:10]]
        assert result.candidate_count == len(left)


def test_fine_rescoring_ranks_few_exactly_and_keeps_the_ranking(market: tuple) -> None:
    """Default settings: FAISS's candidates are re-scored with the fine embedding and only a
    few dozen of the 300 are ranked exactly, yet the page equals the brute-force ranking."""
    specs, centres = market
    index = SearchIndex()
    index.upsert_many(entries(specs))
    (partition,) = index.partitions.values()
    ranked_exactly: list[int] = []
    exact_cross = partition.exact_cross

    def counting(user: object, slots: np.ndarray) -> np.ndarray:
        ranked_exactly.append(int(slots.size))
        return exact_cross(user, slots)  # type: ignore[arg-type]

    partition.exact_cross = counting  # type: ignore[method-assign]
    rng = np.random.default_rng(3)
    for q in range(5):
        user = query_near(centres[rng.integers(M)], seed=20 + q)
        ranked_exactly.clear()
        result = index.search(SearchRequest(spec=user, page_size=10, max_mixture=1))
        expected = [i for i, _ in brute_force(specs, user)[:10]]
        assert [int(h.learnware_id[3:]) for h in result.singles] == expected
        assert 20 <= sum(ranked_exactly) < M // 3


def test_fine_codes_and_faiss_vectors() -> None:
    """int8 codes keep each feature within half a step; the FAISS vector is the stored fine
    embedding's scaled prefix, so the two estimates agree in expectation."""
    from search_service.partition import FineCodes, Partition, partition_key

    specs, _ = synthetic(50, seed=9)
    fine = rff_embeddings(specs, 1024)
    codes = FineCodes.quantize(fine)
    assert codes.codes.dtype == np.int8 and codes.scales.shape == (50,)
    step = codes.scales[:, None]
    assert np.all(np.abs(codes.values() - fine) <= step / 2 + 1e-9)
    assert np.all(np.abs(codes.codes).max(axis=1) == 127)
    partition = Partition(partition_key(specs[0]), 256, 0, rescore_dimension=1024)
    vectors = partition.faiss_vectors(codes.values())
    np.testing.assert_allclose(vectors, 2.0 * codes.values()[:, :256], rtol=1e-6)
    assert FineCodes.quantize(np.zeros((2, 8))).scales.tolist() == [1.0, 1.0]


def test_semantic_filter_then_ranking(market: tuple) -> None:
    specs, centres = market
    index = SearchIndex(candidates=40)
    index.upsert_many(entries(specs))
    user = query_near(centres[5], seed=1)
    query = SemanticQuery(tasks=("Classification",), scenarios=("Health",))
    result = index.search(SearchRequest(semantic=query, spec=user, page_size=5, max_mixture=1))
    keep = [i for i in range(M) if i % 2 == 1 and i % 3 == 0]
    expected = brute_force(specs, user, keep)
    assert result.candidate_count == len(keep)
    assert [int(h.learnware_id[3:]) for h in result.singles] == [i for i, _ in expected[:5]]
    # Every filtered learnware was re-ranked exactly here, so the score is the reference's
    # formula over all of their distances.
    index.candidates = len(keep)
    result = index.search(
        SearchRequest(semantic=query, spec=user, page_size=len(keep), max_mixture=1)
    )
    summary = DistanceSummary.of([d for _, d in expected])
    for hit, (_, d) in zip(result.singles, expected, strict=True):
        assert hit.score == pytest.approx(reference_score(d, summary), abs=1e-6)
    assert result.singles[0].score >= 0.92 and result.singles[-1].score == 0.0


def test_pages_continue_the_ranking(market: tuple) -> None:
    specs, centres = market
    index = SearchIndex()
    index.upsert_many(entries(specs))
    user = query_near(centres[9], seed=2)
    first = index.search(SearchRequest(spec=user, page_size=7, max_mixture=1))
    second = index.search(SearchRequest(spec=user, page_size=7, offset=7, max_mixture=1))
    expected = [i for i, _ in brute_force(specs, user)[:14]]
    got = [int(h.learnware_id[3:]) for h in first.singles + second.singles]
    assert got == expected and first.has_more and second.has_more


def test_reference_score_example_and_similarity() -> None:
    summary = DistanceSummary.of([0.1, 0.2, 0.5, 1.0])
    scores = [reference_score(d, summary) for d in (0.1, 0.2, 0.5, 1.0)]
    assert scores == pytest.approx([0.9424, 0.8377, 0.7, 0.0], abs=1e-4)
    assert reference_score(0.3, DistanceSummary.of([0.3, 0.3])) == 1.0
    # Absolute similarity: 1 for the same spec, independent of any other learnware.
    specs, _ = synthetic(2)
    from lwdock.rkme.kernel import inner_product

    a, b = specs
    same = similarity(inner_product(a, a), inner_product(a, a), inner_product(a, a))
    assert same == pytest.approx(1.0)
    other = similarity(inner_product(b, a), inner_product(a, a), inner_product(b, b))
    assert 0.0 < other < 1.0


def test_mixture_of_two_learnwares_is_found() -> None:
    specs, centres = synthetic(120, seed=3, spread=4.0)
    index = SearchIndex()
    index.upsert_many(entries(specs))
    rng = np.random.default_rng(11)
    a, b = 17, 71
    half = 50
    user = RKMESpec(
        z=np.concatenate(
            [
                centres[a] + rng.normal(size=(half, D)) * 1.0,
                centres[b] + rng.normal(size=(half, D)) * 1.0,
            ]
        ),
        beta=np.full(2 * half, 1 / (2 * half)),
    )
    result = index.search(SearchRequest(spec=user, page_size=5, max_mixture=5))
    assert result.mixture is not None
    members = {int(i[3:]) for i in result.mixture.learnware_ids}
    assert {a, b} <= members
    assert sum(result.mixture.weights) == pytest.approx(1.0)
    assert min(result.mixture.weights) >= 0.0
    assert result.mixture.mmd2 < 0.95 * result.singles[0].mmd2
    assert result.mixture.score >= result.singles[0].score
    # The mixture MMD is the exact MMD of the weighted mixture spec.
    weights = dict(zip(result.mixture.learnware_ids, result.mixture.weights, strict=True))
    mixed = RKMESpec(
        z=np.concatenate([specs[int(i[3:])].z for i in weights]),
        beta=np.concatenate([specs[int(i[3:])].beta * w for i, w in weights.items()]),
    )
    assert result.mixture.mmd2 == pytest.approx(mmd2(mixed, user), rel=1e-6)


def test_greedy_stops_below_five_percent() -> None:
    # Two identical candidates: the second never improves the first by 5%.
    gram = np.array([[1.0, 1.0], [1.0, 1.0]])
    cross = np.array([0.9, 0.9])
    mixture = greedy_mixture(
        np.diag(gram), lambda positions: cross[positions], lambda i, js: gram[np.ix_(i, js)], 1.0
    )
    assert mixture is not None and mixture.members == (0,)


def _plain_greedy(
    gram: np.ndarray, cross: np.ndarray, user_self: float, max_members: int = 5
) -> tuple[list[int], np.ndarray, float]:
    """The reference's greedy, literally: every unused candidate's simplex QP solved by the
    active-set solver, the best accepted while it lowers the squared MMD to <= 95%."""
    from lwdock.rkme.fit import solve_simplex_qp

    members: list[int] = []
    weights, best = np.ones(0), np.inf
    for _ in range(max_members):
        tried = []
        for c in range(cross.size):
            if c in members:
                continue
            index = [*members, c]
            g, cc = gram[np.ix_(index, index)], cross[index]
            w = solve_simplex_qp(g, cc)
            tried.append((user_self + w @ g @ w - 2.0 * cc @ w, c, w))
        value, c, w = min(tried, key=lambda item: item[0])
        if members and value > 0.95 * best:
            break
        members.append(c)
        weights, best = w, value
    return members, weights, best


def test_greedy_equals_the_plain_greedy_of_active_set_solves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The closed-form step (Schur complements, lower-bound pruning, and candidates whose
    KKT condition at weight 0 says they cannot help) returns what solving every candidate's
    simplex QP returns, on users from one, two and three sources."""
    import search_service.mixture as mixture_module
    from lwdock.rkme.kernel import inner_product

    evaluate = mixture_module._evaluate
    kept_at_zero = 0

    def spy(*args: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        nonlocal kept_at_zero
        mmd2, weights = evaluate(*args, **kwargs)  # type: ignore[arg-type]
        current = kwargs.get("current")
        if current is not None:
            at_zero = weights[:, -1] == 0.0
            same = np.all(weights[:, :-1] == current[0], axis=1) & at_zero  # type: ignore[index]
            kept_at_zero += int(np.sum(same & np.isfinite(mmd2)))
        return mmd2, weights

    monkeypatch.setattr(mixture_module, "_evaluate", spy)
    specs, centres = synthetic(30, seed=9, spread=1.0)
    gram = np.array([[inner_product(a, b) for b in specs] for a in specs])
    rng = np.random.default_rng(4)
    for sources in ((3,), (5, 17), (1, 11, 25)):
        z = np.concatenate([centres[i] + rng.normal(size=(20, D)) for i in sources])
        user = RKMESpec(z=z, beta=np.full(z.shape[0], 1 / z.shape[0]), gamma=0.1)
        cross = np.array([inner_product(s, user) for s in specs])
        user_self = inner_product(user, user)
        got = greedy_mixture(
            np.diag(gram),
            lambda positions, cross=cross: cross[positions],  # type: ignore[misc]
            lambda rows, js: gram[np.ix_(rows, js)],
            user_self,
        )
        members, weights, best = _plain_greedy(gram, cross, user_self)
        assert got is not None and list(got.members) == members
        np.testing.assert_allclose(got.weights, weights, rtol=1e-7, atol=1e-10)
        assert got.mmd2 == pytest.approx(best, rel=1e-9)
    assert kept_at_zero > 0  # the KKT shortcut was taken (and agreed)


def _reference_image(z: np.ndarray) -> RKMESpec:
    """A version-1 image spec (the reference's NNGP kernel) with z = the given images."""
    return RKMESpec.from_reference_dict(
        {
            "RKME_IMAGE_VERSION": 1,
            "msg": None,
            "z": z.tolist(),
            "beta": [0.5, 0.5],
            "n_models": 16,
            "model_config": {"k": 2, "mu": 0, "sigma": None, "net_width": 128, "net_depth": 3},
            "type": "RKMEImageSpecification",
        }
    )


def test_image_scores_map_distances_as_the_reference_does() -> None:
    """The reference scores image specs on 1 - exp(-d / 5e-5), not on d (its
    EasyStatSearcher); near-identical learnwares get graded scores, the rest saturate at 1."""
    from search_service.partition import IMAGE_SCORE_SCALE

    rng = np.random.default_rng(3)
    base = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)

    def near(noise: float) -> np.ndarray:
        return base + np.float32(noise) * rng.standard_normal(base.shape).astype(np.float32)

    others = [(rng.standard_normal(base.shape) * 0.5 + 0.3).astype(np.float32) for _ in range(2)]
    specs = [_reference_image(z) for z in (near(0.0), near(0.02), near(0.04), *others)]
    index = SearchIndex()
    index.upsert_many(entries(specs))
    result = index.search(SearchRequest(spec=_reference_image(near(0.005)), max_mixture=1))
    assert result.candidate_count == 5 and len(result.singles) == 5
    distances = [1.0 - np.exp(-hit.mmd2 / IMAGE_SCORE_SCALE) for hit in result.singles]
    assert 0.0 < distances[1] < distances[2] < 0.99 and distances[-1] == 1.0  # graded, saturated
    summary = DistanceSummary.of(distances)
    expected = [reference_score(d, summary) for d in distances]
    assert [hit.score for hit in result.singles] == pytest.approx(expected, abs=1e-12)
    assert [hit.mmd2 for hit in result.singles] == sorted(hit.mmd2 for hit in result.singles)
    # on the raw squared MMDs the scores would differ (the map is what the reference scores)
    raw = DistanceSummary.of([hit.mmd2 for hit in result.singles])
    assert result.singles[1].score != pytest.approx(
        reference_score(result.singles[1].mmd2, raw), abs=1e-3
    )


def test_semantic_columns_apply_the_class_and_tag_rules_as_the_records_do() -> None:
    """The partition's array form of the Class and Tag rules keeps exactly what
    `SemanticQuery.keeps_tags` keeps, on random records and queries with empty values,
    `Others` and unknown values; past 64 scenario values it defers to the records."""
    from search_service.semantic import SemanticColumns

    rng = np.random.default_rng(11)
    values = {
        "data_type": ["", "Table", "Image", "Others"],
        "task": ["", "Classification", "Regression"],
        "library": ["", "Scikit-learn", "PyTorch"],
        "license": ["", "MIT", "Apache-2.0", "Others"],
    }
    scenario_values = ["Business", "Health", "Nature", "Education", "Others"]

    def pick(options: list[str]) -> str:
        return options[int(rng.integers(len(options)))]

    records = [
        SemanticRecord(
            **{name: pick(options) for name, options in values.items()},
            scenarios=tuple(
                sorted({pick(scenario_values) for _ in range(int(rng.integers(0, 3)))})
            ),
        )
        for _ in range(400)
    ]
    columns = SemanticColumns()
    slots = np.arange(len(records))
    columns.assign(slots.tolist(), records)
    for _ in range(200):
        query = SemanticQuery(
            data_types=tuple({pick([*values["data_type"][1:], "Text"]) for _ in range(2)}),
            tasks=tuple({pick(values["task"][1:]) for _ in range(int(rng.integers(0, 2)))}),
            libraries=(),
            scenarios=tuple(
                {pick([*scenario_values, "Unknown"]) for _ in range(int(rng.integers(0, 3)))}
            ),
            licenses=tuple({pick(values["license"][1:]) for _ in range(int(rng.integers(0, 2)))}),
        )
        kept = columns.keeps(query, slots)
        assert kept is not None
        assert kept.tolist() == [query.keeps_tags(r) for r in records], query
    many = SemanticColumns()
    many.assign(list(range(70)), [SemanticRecord(scenarios=(f"s{i}",)) for i in range(70)])
    assert many.keeps(SemanticQuery(scenarios=("s3",)), np.arange(70)) is None
    assert many.keeps(SemanticQuery(data_types=("Table",)), np.arange(70)) is not None


def test_filtered_statistical_search_equals_the_rules_over_the_records(market: tuple) -> None:
    """With a semantic filter, the statistical search ranks exactly the learnwares the
    reference's rules keep (also where the partition's scenarios overflow the masks)."""
    specs, centres = market
    user = query_near(centres[5], seed=3)
    for overflow in (False, True):
        es = entries(specs)
        if overflow:  # 300 distinct scenario values, beyond the masks' 64
            es = [
                LearnwareEntry(
                    e.learnware_id,
                    SemanticRecord(
                        data_type="Table",
                        task=e.semantic.task,
                        scenarios=(*e.semantic.scenarios, f"extra-{i}"),
                    ),
                    e.specs,
                )
                for i, e in enumerate(es)
            ]
        index = SearchIndex()
        index.upsert_many(es)
        query = SemanticQuery(tasks=("Classification",), scenarios=("Health",))
        keep = [i for i, e in enumerate(es) if query.keeps_tags(e.semantic)]
        assert 0 < len(keep) < len(es)
        result = index.search(SearchRequest(spec=user, semantic=query, page_size=10, max_mixture=1))
        expected = brute_force(specs, user, keep=keep)
        assert [int(h.learnware_id[3:]) for h in result.singles] == [i for i, _ in expected[:10]]
        assert result.candidate_count == len(keep)


def test_a_filter_over_an_ivf_partition_searches_faiss_restricted_to_the_kept(
    market: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter keeping more than FILTER_SCAN_MAX learnwares of an IVF partition: FAISS is
    searched with an IDSelector over the kept slots (no scan of their vectors), and the
    ranking still equals the brute-force one over the kept learnwares; the scores agree
    with those of the scan of the kept vectors (their mean is estimated on a sample)."""
    import search_service.partition as partition_module

    specs, centres = market
    index = SearchIndex(flat_max=100, candidates=40)
    index.upsert_many(entries(specs))
    (partition,) = index.partitions.values()
    assert partition.nlist
    query = SemanticQuery(tasks=("Classification",))
    keep = [i for i in range(M) if i % 2 == 1]
    selected: list[int] = []
    faiss_search = type(partition._near).search

    def spy(self, x, k, *args, params=None, **kwargs):
        if params is not None and params.sel is not None:
            selected.append(k)
        return faiss_search(self, x, k, *args, params=params, **kwargs)

    monkeypatch.setattr(type(partition._near), "search", spy)
    monkeypatch.setattr(partition_module, "FILTER_SCAN_MAX", 50)
    monkeypatch.setattr(partition_module, "MEAN_SAMPLE", 40)
    rng = np.random.default_rng(11)
    for q in range(4):
        user = query_near(centres[keep[rng.integers(len(keep))]], seed=20 + q)
        request = SearchRequest(spec=user, semantic=query, page_size=10, max_mixture=1)
        result = index.search(request)
        expected = brute_force(specs, user, keep)
        assert [int(h.learnware_id[3:]) for h in result.singles] == [i for i, _ in expected[:10]]
        assert result.candidate_count == len(keep)
        monkeypatch.setattr(partition_module, "FILTER_SCAN_MAX", 10_000)
        scanned = index.search(request)
        monkeypatch.setattr(partition_module, "FILTER_SCAN_MAX", 50)
        assert [h.learnware_id for h in scanned.singles] == [h.learnware_id for h in result.singles]
        for a, b in zip(result.singles, scanned.singles, strict=True):
            assert a.mmd2 == b.mmd2 and a.score == pytest.approx(b.score, abs=0.05)
    assert selected  # the restricted FAISS search ran


def test_a_filter_that_keeps_every_learnware_is_no_filter(market: tuple) -> None:
    """Data = Table over a partition of table learnwares (the usual query) keeps them all:
    the search takes the unfiltered path and returns what the unfiltered search returns."""
    specs, centres = market
    index = SearchIndex(flat_max=100)
    index.upsert_many(entries(specs))
    (partition,) = index.partitions.values()
    user = query_near(centres[9], seed=4)
    query = SemanticQuery(data_types=("Table", "Image"), scenarios=("Business", "Health"))
    assert index._filter(partition, query, user) is None
    filtered = index.search(SearchRequest(spec=user, semantic=query))
    assert filtered == index.search(SearchRequest(spec=user))
    assert filtered.candidate_count == M
    narrower = SemanticQuery(data_types=("Table",), tasks=("Regression",))
    kept = index._filter(partition, narrower, user)
    assert kept is not None and kept.size == M // 2


def test_semantic_rules() -> None:
    records = [
        (
            f"lw-{i:08d}",
            SemanticRecord(
                data_type="Table",
                task="Classification",
                scenarios=("Business",),
                name=f"gauss_{i}",
                description=f"Gaussian data centred at {i}",
            ),
        )
        for i in range(7)
    ]
    records.append(("lw-00000099", SemanticRecord(data_type="Image", name="other")))
    fuzzy = semantic_filter(SemanticQuery(text="gaus_3"), records)
    assert [i for i, _ in fuzzy] == [i for i, _ in records[:7]]  # all of them, stable order
    exact = semantic_filter(SemanticQuery(text="centred at 6"), records)
    assert [i for i, _ in exact] == ["lw-00000006"]
    assert len(semantic_filter(SemanticQuery(data_types=("Image", "Text")), records)) == 1
    assert len(semantic_filter(SemanticQuery(scenarios=("Business", "Health")), records)) == 7
    # A learnware without a value for a constrained key: kept only for `Others`.
    assert semantic_filter(SemanticQuery(tasks=("Regression",)), records) == []
    assert len(semantic_filter(SemanticQuery(tasks=("Others",)), records)) == 1
    assert [i for i, _ in semantic_filter(SemanticQuery(learnware_id="099"), records)] == [
        "lw-00000099"
    ]


@pytest.mark.parametrize("overflow", [False, True], ids=["masks", "records"])
def test_semantic_only_search_equals_the_rules_over_the_records(overflow: bool) -> None:
    """A search without a specification (the catalog's arrays) returns what the reference's
    rules return over the records in market order, through inserts, updates and removals;
    `records` = more scenario values than the masks hold."""
    rng = np.random.default_rng(5)
    words = ["gauss", "linear", "forest", "image", "speech", "tabular"]
    scenario_pool = [f"s{i}" for i in range(80 if overflow else 6)]

    def record(i: int) -> SemanticRecord:
        return SemanticRecord(
            data_type=str(rng.choice(["Table", "Image", ""])),
            task=str(rng.choice(["Classification", "Regression", ""])),
            library=str(rng.choice(["PyTorch", "Scikit-learn"])),
            scenarios=tuple(rng.choice(scenario_pool, size=rng.integers(0, 3), replace=False)),
            license="MIT",
            name=f"{rng.choice(words)} model {i}",
            description=f"A {rng.choice(words).upper()} learnware, number {i}",
        )

    index = SearchIndex()
    index.upsert_many([LearnwareEntry(f"lw-{i:08d}", record(i)) for i in range(400)])
    queries = [
        SemanticQuery(),
        SemanticQuery(data_types=("Table",), tasks=("Regression", "Others")),
        SemanticQuery(scenarios=("s1", "s4")),
        SemanticQuery(scenarios=("Others",), libraries=("PyTorch",)),
        SemanticQuery(text="forest"),
        SemanticQuery(text="Speech Learnware, number 1"),
        SemanticQuery(text="lineer modl", tasks=("Classification",)),  # fuzzy
        SemanticQuery(text="no such words at all"),
        SemanticQuery(learnware_id="0000012", data_types=("Image",)),
    ]
    for step in range(3):
        in_market_order = sorted(index.records.items(), key=lambda item: item[0], reverse=True)
        for query in queries:
            expected = semantic_filter(query, in_market_order)
            result = index.search(SearchRequest(semantic=query, page_size=1000))
            assert [h.learnware_id for h in result.singles] == [i for i, _ in expected]
            assert result.candidate_count == len(expected)
        # updates, removals and new learnwares (slots are reused)
        changed = rng.choice(400, size=60, replace=False)
        for i in changed[:30].tolist():
            index.remove(f"lw-{i:08d}")
        index.upsert_many(
            [LearnwareEntry(f"lw-{i:08d}", record(i)) for i in changed[30:].tolist()]
            + [LearnwareEntry(f"lw-{1000 + 10 * step + j:08d}", record(j)) for j in range(10)]
        )
    assert len(index.catalog) == len(index.records)


def test_semantic_only_search_and_empty_reasons(market: tuple) -> None:
    specs, _ = market
    index = SearchIndex()
    index.upsert_many(entries(specs[:20]))
    index.upsert_many([LearnwareEntry("lw-00009999", SemanticRecord(name="no spec at all"))])
    result = index.search(SearchRequest(semantic=SemanticQuery(text="no spec"), page_size=5))
    assert [h.learnware_id for h in result.singles] == ["lw-00009999"]
    everything = index.search(SearchRequest(page_size=100))
    assert everything.candidate_count == 21 and everything.singles[0].learnware_id == "lw-00009999"
    # A dimension no learnware has: empty, with a reason, not an error.
    other = RKMESpec(z=np.zeros((3, 7)), beta=np.full(3, 1 / 3))
    result = index.search(SearchRequest(spec=other))
    assert result.singles == [] and "d=7" in result.empty_reason
    nothing = index.search(
        SearchRequest(semantic=SemanticQuery(licenses=("GPL-3.0",)), spec=query_near(0, 1))
    )
    assert nothing.singles == [] and "semantic" in nothing.empty_reason
    with pytest.raises(InvalidArgument):
        index.search(SearchRequest(spec=query_near(0, 1), page_size=-1))
    with pytest.raises(InvalidArgument, match="re-scoring"):
        SearchIndex(embedding_dimension=512, rescore_dimension=256)


def test_updates_and_deletes_follow_sequences(market: tuple) -> None:
    specs, _ = market
    index = SearchIndex()
    first = entries(specs[:3])
    for sequence, entry in enumerate(first, start=1):
        index.apply(sequence, entry.learnware_id, entry)
    # An update moves lw-0 to another spec; an old sequence is ignored.
    moved = LearnwareEntry("lw-00000000", first[0].semantic, (specs[2],))
    index.apply(4, "lw-00000000", moved)
    index.apply(2, "lw-00000001", None)
    assert index.learnware_count == 3 and index.last_sequence == 4
    user = specs[2]
    top = index.search(SearchRequest(spec=user, page_size=3, max_mixture=1)).singles
    assert {h.learnware_id for h in top[:2]} == {"lw-00000000", "lw-00000002"}
    assert top[0].mmd2 == pytest.approx(0.0, abs=1e-6)
    index.apply(5, "lw-00000002", None)
    index.apply(6, "lw-00000000", None)
    index.apply(7, "lw-00000001", None)
    assert index.learnware_count == 0 and index.partitions == {}


def test_snapshot_round_trip(market: tuple, tmp_path: Path) -> None:
    specs, centres = market
    index = SearchIndex(flat_max=100)
    index.upsert_many(entries(specs[:150]))
    text = RKMESpec(
        z=np.random.default_rng(0).normal(size=(4, 6)),
        beta=np.full(4, 0.25),
        type=SpecType.TEXT,
        language=["en"],
        embedding_model="all-MiniLM-L6-v2",
    )
    index.upsert_many([LearnwareEntry("lw-00007777", SemanticRecord(name="text one"), (text,))])
    index.last_sequence = 42
    save_snapshot(index, tmp_path)
    save_snapshot(index, tmp_path)  # the second replaces the first
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1

    restored = SearchIndex(flat_max=100)
    assert load_snapshot(restored, tmp_path)
    assert restored.last_sequence == 42 and restored.records == index.records
    assert set(restored.partitions) == set(index.partitions)
    user = query_near(centres[3], seed=5)
    before = index.search(SearchRequest(spec=user, page_size=10))
    after = restored.search(SearchRequest(spec=user, page_size=10))
    assert after.singles == before.singles and after.mixture == before.mixture
    english = RKMESpec(
        z=text.z,
        beta=text.beta,
        type=SpecType.TEXT,
        language=["en"],
        embedding_model=text.embedding_model,
    )
    assert restored.search(SearchRequest(spec=english)).singles[0].learnware_id == "lw-00007777"
    german = RKMESpec(
        z=text.z,
        beta=text.beta,
        type=SpecType.TEXT,
        language=["de"],
        embedding_model=text.embedding_model,
    )
    assert restored.search(SearchRequest(spec=german)).singles == []
    # Another embedding dimension is another index version: the snapshot is not used.
    assert not load_snapshot(SearchIndex(embedding_dimension=128), tmp_path)


def test_snapshot_writes_racing_leave_a_loadable_snapshot(market: tuple, tmp_path: Path) -> None:
    """A periodic snapshot still being written in its thread when stop() forces another (as
    the follower does) must not leave CURRENT naming a removed directory."""
    from concurrent.futures import ThreadPoolExecutor

    from search_service.sync import RegistryFollower

    specs, _ = market
    index = SearchIndex()
    index.upsert_many(entries(specs[:40]))
    index.last_sequence = 7
    follower = RegistryFollower(index, "127.0.0.1:1", snapshot_dir=tmp_path)
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            list(pool.map(lambda _: follower.save_snapshot(force=True), range(4)))
            restored = SearchIndex()
            assert load_snapshot(restored, tmp_path)
            assert restored.records == index.records and restored.last_sequence == 7
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


def test_snapshot_is_written_while_changes_go_on(
    market: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower holds the index's read lock only to capture it: while the capture is
    written to disk, a change (which takes the write lock) goes through. The snapshot holds
    the index as captured, and the change counts as unsaved, so the next write has it."""
    import threading

    import search_service.sync as sync
    from search_service.sync import RegistryFollower

    specs, _ = market
    index = SearchIndex()
    index.upsert_many(entries(specs[:31])[:30])
    index.last_sequence = 3
    late = entries(specs[:31])[30:]
    follower = RegistryFollower(index, "127.0.0.1:1", snapshot_dir=tmp_path)
    changed_during_write: list[bool] = []
    real_write = sync.write_snapshot

    def write_while_changing(capture: object, directory: Path) -> Path:
        change = threading.Thread(target=index.upsert_many, args=(late,))
        change.start()
        change.join(timeout=10)
        changed_during_write.append(not change.is_alive())
        return real_write(capture, directory)  # type: ignore[arg-type]

    monkeypatch.setattr(sync, "write_snapshot", write_while_changing)
    follower.save_snapshot(force=True)
    assert changed_during_write == [True]
    assert index.learnware_count == 31
    restored = SearchIndex()
    assert load_snapshot(restored, tmp_path)
    assert restored.learnware_count == 30 and late[0].learnware_id not in restored.records

    monkeypatch.setattr(sync, "write_snapshot", real_write)
    follower.save_snapshot(force=False)  # the change since the capture is still unsaved
    restored = SearchIndex()
    assert load_snapshot(restored, tmp_path)
    assert restored.records == index.records


def test_a_batch_of_changes_equals_them_one_by_one(market: tuple) -> None:
    specs, _ = market
    es = entries(specs[:6])
    moved = LearnwareEntry(es[1].learnware_id, es[1].semantic, (specs[5],))
    changes = [
        (1, es[0].learnware_id, es[0]),
        (2, es[1].learnware_id, es[1]),
        (3, es[0].learnware_id, None),
        (4, es[2].learnware_id, es[2]),
        (5, es[1].learnware_id, moved),
        (6, es[3].learnware_id, es[3]),
        (2, es[4].learnware_id, es[4]),  # already applied: ignored
    ]
    batched, single = SearchIndex(), SearchIndex()
    batched.apply_many(changes)
    for change in changes:
        single.apply(*change)
    assert batched.last_sequence == single.last_sequence == 6
    assert batched.records == single.records and batched.placement == single.placement
    assert set(batched.records) == {es[i].learnware_id for i in (1, 2, 3)}
    request = SearchRequest(spec=specs[5], page_size=3)
    assert batched.search(request).singles == single.search(request).singles
    assert batched.search(request).singles[0].learnware_id == es[1].learnware_id


def test_a_truncated_snapshot_means_a_replay_from_zero(market: tuple, tmp_path: Path) -> None:
    specs, _ = market
    index = SearchIndex(flat_max=100)
    index.upsert_many(entries(specs[:20]))
    index.last_sequence = 9
    root = save_snapshot(index, tmp_path)
    (npz,) = root.glob("*.npz")
    npz.write_bytes(npz.read_bytes()[:100])  # a crash mid-write, say: not a zip any more
    restored = SearchIndex(flat_max=100)
    assert not load_snapshot(restored, tmp_path)
    assert restored.last_sequence == 0 and restored.learnware_count == 0


def test_a_batch_that_fails_leaves_last_sequence_before_it(market: tuple) -> None:
    """The follower resumes from last_sequence: it must not pass changes never applied."""
    specs, _ = market
    index = SearchIndex(flat_max=100)
    good = entries(specs[:3])
    index.apply_many([(1, good[0].learnware_id, good[0]), (2, "lw-gone", None)])
    assert index.last_sequence == 2
    broken = LearnwareEntry("lw-broken", SemanticRecord(name="broken"), (specs[3],))
    object.__setattr__(broken, "specs", (object(),))  # applying it raises
    with pytest.raises(Exception):  # noqa: B017 - any failure while applying
        index.apply_many(
            [(3, good[1].learnware_id, good[1]), (4, "lw-broken", broken), (5, "lw-x", None)]
        )
    assert index.last_sequence == 2 and "lw-broken" not in index.records
    # the follower replays from 3; the learnware is fixed by then
    fixed = LearnwareEntry("lw-broken", SemanticRecord(name="broken"), (specs[3],))
    index.apply_many(
        [(3, good[1].learnware_id, good[1]), (4, "lw-broken", fixed), (5, "lw-gone", None)]
    )
    assert index.last_sequence == 5 and index.learnware_count == 3
