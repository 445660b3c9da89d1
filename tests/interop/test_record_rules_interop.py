"""Our record verdicts (`record_rules`) against upstream's own offline reader, record by record.

The same real and mutilated v2 payloads (converted from `shared/reference-data/legacy`, the
records the real PRIMARY serves) are written into replica directories, which upstream's
`ModelReferenceManager(offline=True)` then reads in the peer venv (`upstream_verdict.py`).
A record is *usable to upstream* when its reader loads it and, for categories whose records
are files to fetch, it names at least one download. Our rules must refuse exactly the records
that are not usable to upstream, except the deliberate tolerances in `TOLERATED` (values
upstream 8.6.2 rejects but a newer reader may know).
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.convert import convert_legacy, convertible
from horde_replica_sync.record_rules import rule_for, unusable_records
from tests.environment import clean_env, shared_dir
from tests.interop.peer import V2_FILES, peer_python

pytestmark = pytest.mark.peer

CONVERTIBLE = [category for category in C if convertible(category)]
VERDICT = Path(__file__).with_name("upstream_verdict.py")
Records = dict[str, Any]
Payloads = dict[C, Records]
Mutation = Callable[[dict[str, Any]], None]


def _drop(*fields: str) -> Mutation:
    def mutate(record: dict[str, Any]) -> None:
        for field in fields:
            del record[field]

    return mutate


def _set(**values: Any) -> Mutation:
    def mutate(record: dict[str, Any]) -> None:
        record.update(values)

    return mutate


# (category, index of the record, what is done to it, what the case is called)
MUTATIONS: list[tuple[C, int, Mutation, str]] = [
    (C.image_generation, 0, _drop("baseline"), "image without baseline"),
    (C.image_generation, 1, _drop("nsfw"), "image without nsfw"),
    (C.image_generation, 2, _drop("config"), "image without config"),
    (C.image_generation, 3, _set(baseline="flux_9000", brand_new={"x": 1}), "new baseline+field"),
    (C.image_generation, 4, _set(config={"download": [{"file_name": "x"}]}), "download w/o url"),
    (C.image_generation, 5, _set(tags="anime"), "image tags not a list"),
    (C.image_generation, 6, _set(style="vaporwave"), "image unknown style"),
    (C.text_generation, 0, _drop("parameters"), "text without parameters"),
    (C.text_generation, 1, _set(baseline="brand_new", brand_new=[1]), "text new baseline+field"),
    (C.esrgan, 0, _set(config={"download": []}), "esrgan no download"),
    (C.esrgan, 1, _set(brand_new=True), "esrgan unknown field"),
    (C.controlnet, 0, _set(controlnet_style="brand_new"), "controlnet new style"),
]

# Records upstream 8.6.2 drops that we publish on purpose: see record_rules' docstring.
TOLERATED = {"image unknown style"}


@pytest.fixture(scope="module")
def real() -> Payloads:
    folder = shared_dir() / "reference-data" / "legacy"
    if not folder.is_dir():
        pytest.fail(f"no legacy reference data at {folder} (set HRS_SHARED_DIR)")
    files = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    return {category: json.loads(convert_legacy(category, files)) for category in CONVERTIBLE}


def gutted(payloads: Payloads) -> Payloads:
    return {
        category: {key: {"name": record["name"]} for key, record in data.items()}
        for category, data in payloads.items()
    }


def mutilated(payloads: Payloads) -> tuple[Payloads, dict[tuple[C, str], str]]:
    """`payloads` with `MUTATIONS` applied; also (category, record name) -> case name."""
    changed = copy.deepcopy(payloads)
    cases: dict[tuple[C, str], str] = {}
    for category, index, mutate, case in MUTATIONS:
        record = list(changed[category].values())[index]
        mutate(record)
        cases[category, record["name"]] = case
    return changed, cases


def upstream_verdicts(payloads: Payloads, folder: Path) -> dict[str, dict[str, int] | None]:
    """Upstream's reader on a replica holding `payloads`: {category: {name: downloads}}."""
    replica = folder / "replica"
    replica.mkdir(parents=True)
    for category, data in payloads.items():
        (replica / V2_FILES[category.value]).write_text(json.dumps(data), encoding="utf-8")
    python = peer_python()
    if not python.exists():
        pytest.fail(f"peer venv missing ({python}); run `make peer`")
    proc = subprocess.run(
        [str(python), str(VERDICT), str(replica), str(folder / "scratch")],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"upstream_verdict.py failed:\n{proc.stderr[-4000:]}"
    verdicts: dict[str, dict[str, int] | None] = json.loads(proc.stdout)
    return verdicts


def needs_files(category: C) -> bool:
    return rule_for(category).model_fields["config"].is_required()


def compare(payloads: Payloads, folder: Path) -> dict[C, dict[str, tuple[bool, bool, bool]]]:
    """Per category and record name: (we accept, upstream loads, upstream can use)."""
    upstream = upstream_verdicts(payloads, folder)
    table: dict[C, dict[str, tuple[bool, bool, bool]]] = {}
    for category, data in payloads.items():
        refused = {data[key]["name"] for key, _ in unusable_records(category, data)}
        loaded = upstream[category.value] or {}
        rows = {}
        for record in data.values():
            name = record["name"]
            usable = name in loaded and (loaded[name] > 0 or not needs_files(category))
            rows[name] = (name not in refused, name in loaded, usable)
        table[category] = rows
    return table


def mark(flag: bool) -> str:
    return "yes" if flag else "no"


class TestOurVerdictMatchesUpstream:
    """Record by record, we refuse what upstream's reader cannot use, and only that."""

    def test_real_payloads(self, real: Payloads, tmp_path: Path) -> None:
        table = compare(real, tmp_path)
        for category, rows in table.items():
            total = len(rows)
            assert all(ours and usable for ours, _, usable in rows.values()), category
            print(
                f"\n[rules-vs-upstream] real {category}: {total}/{total} ours pass, upstream uses"
            )

    def test_gutted_payloads(self, real: Payloads, tmp_path: Path) -> None:
        table = compare(gutted(real), tmp_path)
        for category, rows in table.items():
            ours = sum(accepted for accepted, _, _ in rows.values())
            loads = sum(loaded for _, loaded, _ in rows.values())
            uses = sum(usable for _, _, usable in rows.values())
            print(
                f"\n[rules-vs-upstream] gutted {category}: ours pass {ours}, upstream loads "
                f"{loads}, upstream can use {uses} (of {len(rows)})"
            )
            assert ours == 0 and uses == 0, category
        assert not any(loaded for _, loaded, _ in table[C.image_generation].values())
        assert not any(loaded for _, loaded, _ in table[C.text_generation].values())

    def test_mutilated_payloads(self, real: Payloads, tmp_path: Path) -> None:
        payloads, cases = mutilated(real)
        table = compare(payloads, tmp_path)
        for (category, name), case in cases.items():
            ours, loaded, usable = table[category][name]
            print(
                f"\n[rules-vs-upstream] {case:24} ours accepts {mark(ours):3} upstream loads "
                f"{mark(loaded):3} upstream can use {mark(usable)}"
            )
            if case in TOLERATED:
                assert ours and not usable, f"{case}: expected a deliberate tolerance"
            else:
                assert ours == usable, f"{case}: ours {mark(ours)}, upstream {mark(usable)}"
        untouched = [
            (category, name, row)
            for category, rows in table.items()
            for name, row in rows.items()
            if (category, name) not in cases
        ]
        assert all(ours and usable for _, _, (ours, _, usable) in untouched)
