"""The model catalog: every table the pipeline builds, read from the SQL files' headers, and the runner.

A SQL model is one file `sql/<layer>/<name>.sql` that declares itself in a header of `-- key: value`
lines before any other line:

    -- model: int_journey_events          the table's name (= the file's name)
    -- grain: event_id                    columns that identify a row (checked unique and not null if published)
    -- materialized: table                table | temp (scratch, one connection) | view
    -- partition: customer                customer (rows of one customer depend only on that customer) | none
    -- publish: false                     true (Parquet mart + warehouse) | warehouse (warehouse only) | false
    -- params: journey_timeout_us         the bound parameters ($name) the SQL uses
    -- procedure: identity                (optional) built by that Python procedure, not by the runner alone

then description lines, and optionally `-- column <name>: <meaning>` lines (or the layer's schema.yml).

What a model reads is derived from its SQL with DuckDB's own parser (`json_serialize_sql`), never written
by hand; the build order is a topological sort of those dependencies. Steps that must stay procedural
(identity's passes, the funnel's per-level passes, tables made from the stage YAML) register as
`Procedure`s: their SQL files name them in `procedure:`, and tables they make in Python are declared
`Model`s with the same fields. Adding a table is adding one file.

Column descriptions (`Model.columns`) of a SQL model come from `schema.yml` beside its layer's SQL files,
`models: {<model>: {columns: {<column>: <meaning>}}}`; a table made in Python gives them as `columns=` of
its `Model`, next to the code that defines its schema. Every published and kept table describes every column.
"""

from __future__ import annotations

import functools
import heapq
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import duckdb
import yaml

from journeys import db, progress

LAYERS = ("staging", "intermediate", "marts")
MATERIALIZED = ("table", "temp", "view")
PARTITIONS = ("customer", "none")
PUBLISH = ("true", "warehouse", "false")
SOURCES = ("stg_source_rows",)
"""Inputs no model builds: ingest gives stg_events (or stg_links) its mapped rows as SQL (`materialize`'s inputs)."""

LAYER_TASKS = {"staging": "ingest", "intermediate": "stitch-journeys", "marts": "build-marts"}
"""Flow task that builds a layer's SQL models not built by a procedure."""

_HEADER_RE = re.compile(r"^--\s*(model|grain|materialized|partition|publish|params|procedure)\s*:\s*(.*?)\s*$")
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_COLUMN_RE = re.compile(r"^--\s*column\s+([a-z_][a-z0-9_]*)\s*:\s*(.+?)\s*$")


class CatalogError(ValueError):
    """A model file or the graph they form is not valid; the message names the file and the field."""


@dataclass(frozen=True)
class Model:
    """One table of the pipeline: its header fields, derived dependencies and (for SQL models) its text."""

    name: str
    layer: str
    materialized: Literal["table", "temp", "view"]
    grain: tuple[str, ...] = ()
    partition: Literal["customer", "none"] = "none"
    publish: Literal["true", "warehouse", "false"] = "false"
    params: tuple[str, ...] = ()
    procedure: str | None = None
    depends_on: frozenset[str] = frozenset()
    sql: str | None = None
    path: str | None = None
    description: str = ""
    columns: Mapping[str, str] = field(default_factory=dict)

    @property
    def published(self) -> bool:
        """Written as a Parquet mart (and kept in the warehouse)."""
        return self.publish == "true"

    @property
    def kept(self) -> bool:
        """Kept in the published warehouse file."""
        return self.publish in ("true", "warehouse")


@dataclass(frozen=True)
class Procedure:
    """A build step that runs in Python (passes, loops, tables from config) and produces catalog tables."""

    name: str
    task: str
    layer: str
    run: Callable[..., Mapping[str, Any]] | None  # None: a flow task of its own runs it, not the runner
    partition: Literal["customer", "none"] = "none"
    outputs: tuple[Model, ...] = ()


_PROCEDURES: dict[str, Procedure] = {}
_PROCEDURE_MODULES = (
    "journeys.ingest",
    "journeys.build",
    "journeys.identity",
    "journeys.stages",
    "journeys.funnel",
    "journeys.alerts",
)


def register(procedure: Procedure) -> Procedure:
    """Make a procedure known to every catalog (modules call this at import)."""
    for out in procedure.outputs:
        if out.procedure != procedure.name:
            raise CatalogError(f"procedure {procedure.name}: output {out.name} must name it as its procedure")
    _PROCEDURES[procedure.name] = procedure
    return procedure


def shipped_models_dir() -> Path:
    """The SQL models shipped inside the package (works from a wheel as from a checkout)."""
    return Path(str(resources.files("journeys.sql")))


def _parse_json_ast(sql: str, con: duckdb.DuckDBPyConnection | None = None) -> dict[str, Any]:
    if con is None:
        with duckdb.connect() as own:
            return _parse_json_ast(sql, own)
    text = con.execute("select json_serialize_sql($sql)", {"sql": sql}).fetchall()[0][0]
    tree = json.loads(text)
    if tree.get("error"):
        raise CatalogError(tree.get("error_message", "cannot parse"))
    return tree


def _walk(node: Any, ctes: frozenset[str], tables: set[str], params: set[str]) -> None:
    """Collect base tables (not CTEs in scope) and named parameters of a serialized DuckDB statement."""
    if isinstance(node, list):
        for item in node:
            _walk(item, ctes, tables, params)
        return
    if not isinstance(node, dict):
        return
    scope = ctes
    cte_map = node.get("cte_map")
    if isinstance(cte_map, dict):
        # A CTE's body sees only the CTEs before it: `x as (select * from x)` reads the table x.
        for entry in cte_map.get("map", []):
            _walk(entry["value"], scope, tables, params)
            scope = scope | {entry["key"].lower()}
    if node.get("type") == "BASE_TABLE":
        name = node["table_name"].lower()
        if name not in scope:
            tables.add(name)
    if node.get("class") == "PARAMETER" and node.get("identifier"):
        params.add(node["identifier"])
    for key, value in node.items():
        if key != "cte_map":
            _walk(value, scope, tables, params)


def sql_reads(sql: str, con: duckdb.DuckDBPyConnection | None = None) -> tuple[frozenset[str], frozenset[str]]:
    """Tables and named parameters one SQL statement reads, from DuckDB's parser."""
    tables: set[str] = set()
    params: set[str] = set()
    for statement in _parse_json_ast(sql, con)["statements"]:
        _walk(statement, frozenset(), tables, params)
    return frozenset(tables), frozenset(params)


def _split_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def parse_model_file(
    path: Path, layer: str, columns: Mapping[str, Any] | None = None, con: duckdb.DuckDBPyConnection | None = None
) -> Model:
    """Read one SQL model file: header fields, description, derived dependencies and parameters."""
    text = path.read_text(encoding="utf-8")
    fields: dict[str, str] = {}
    description: list[str] = []
    header_columns: dict[str, str] = {}
    in_header = True
    for line in text.splitlines():
        m = _HEADER_RE.match(line) if in_header else None
        if m:
            if m.group(1) in fields:
                raise CatalogError(f"{path}: header field {m.group(1)!r} given twice")
            fields[m.group(1)] = m.group(2)
            continue
        in_header = False
        if not line.startswith("--"):
            break
        described = _COLUMN_RE.match(line)
        if described:
            if described.group(1) in header_columns:
                raise CatalogError(f"{path}: column {described.group(1)!r} described twice")
            header_columns[described.group(1)] = described.group(2)
            continue
        description.append(line[2:].strip())

    def bad(key: str, expected: str) -> CatalogError:
        return CatalogError(f"{path}: header field {key!r} is {fields.get(key)!r}; expected {expected}")

    name = fields.get("model")
    if name != path.stem:
        raise bad("model", f"the file's name {path.stem!r}")
    if fields.get("materialized") not in MATERIALIZED:
        raise bad("materialized", " | ".join(MATERIALIZED))
    partition = fields.get("partition", "none")
    if partition not in PARTITIONS:
        raise bad("partition", " | ".join(PARTITIONS))
    publish = fields.get("publish", "false")
    if publish not in PUBLISH:
        raise bad("publish", " | ".join(PUBLISH))
    grain = _split_list(fields.get("grain", ""))
    if publish != "false" and not grain:
        raise bad("grain", "the columns that identify a row of a published model")
    procedure = fields.get("procedure") or None
    declared = frozenset(_split_list(fields.get("params", "")))
    try:
        reads, used = sql_reads(text, con)
    except CatalogError as exc:
        raise CatalogError(f"{path}: {exc}") from None
    if declared != used:
        raise bad("params", f"exactly the parameters the SQL uses: {', '.join(sorted(used)) or '(none)'}")
    for col in grain:
        if not _NAME_RE.match(col):
            raise bad("grain", "comma-separated column names")
    doc = dict(columns or {})
    both = sorted(set(header_columns) & set(doc.get("columns") or {}))
    if both:
        raise CatalogError(f"{path}: columns {both} are described both in the file and in schema.yml")
    return Model(
        name=name,
        layer=layer,
        materialized=fields["materialized"],  # type: ignore[arg-type]
        grain=grain,
        partition=partition,  # type: ignore[arg-type]
        publish=publish,  # type: ignore[arg-type]
        params=tuple(sorted(declared)),
        procedure=procedure,
        depends_on=reads - {name} if procedure else reads,
        sql=text,
        path=str(path),
        description=" ".join(d for d in description if d) or str(doc.get("description", "")),
        columns={**dict(doc.get("columns") or {}), **header_columns},
    )


@dataclass(frozen=True)
class Step:
    """One flow task: the catalog nodes (SQL models or procedures) it builds, in order."""

    name: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Catalog:
    """Every table the pipeline makes, and the graph of what builds what."""

    models_dir: str
    models: Mapping[str, Model]
    procedures: Mapping[str, Procedure]

    def producer(self, table: str) -> str:
        """The node that builds `table`: its procedure, or the SQL model itself."""
        if table in SOURCES:
            return "ingest"
        return self.models[table].procedure or table

    def nodes(self) -> list[str]:
        """Every buildable node: SQL models built by the runner, and procedures."""
        standalone = [m.name for m in self.models.values() if m.procedure is None]
        return sorted(standalone) + sorted(self.procedures)

    def node_reads(self, node: str) -> frozenset[str]:
        """Tables a node reads that it does not make itself."""
        if node in self.procedures:
            own = {m.name for m in self.models.values() if m.procedure == node}
            reads = {t for m in self.models.values() if m.procedure == node for t in m.depends_on}
            return frozenset(reads - own - ({*SOURCES} if node == "ingest" else set()))
        return self.models[node].depends_on

    def dependencies(self, node: str) -> frozenset[str]:
        """Nodes that must be built before `node`."""
        return frozenset(self.producer(t) for t in self.node_reads(node)) - {node}

    def _rank(self, node: str) -> tuple[int, int, str]:
        if node in self.procedures:
            return (LAYERS.index(self.procedures[node].layer), 1, node)
        return (LAYERS.index(self.models[node].layer), 0, node)

    def order(self, nodes: Iterable[str] | None = None) -> list[str]:
        """Nodes in build order (dependencies first; ties by layer, SQL models before procedures, then name)."""
        wanted = set(self.nodes() if nodes is None else nodes)
        deps = {n: self.dependencies(n) & wanted for n in wanted}
        ready = [self._rank(n) for n in wanted if not deps[n]]
        heapq.heapify(ready)
        out: list[str] = []
        while ready:
            node = heapq.heappop(ready)[2]
            out.append(node)
            for n in wanted:
                if node in deps[n]:
                    deps[n] = deps[n] - {node}
                    if not deps[n]:
                        heapq.heappush(ready, self._rank(n))
        if len(out) != len(wanted):
            raise CatalogError(f"the models form a cycle among {sorted(wanted - set(out))}")
        return out

    def upstream(self, nodes: Iterable[str]) -> set[str]:
        """The nodes and everything they need."""
        todo, seen = list(nodes), set()
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(self.dependencies(n))
        return seen

    def downstream(self, nodes: Iterable[str]) -> set[str]:
        """Every node that needs one of `nodes`, directly or not (not the nodes themselves)."""
        start = set(nodes)
        return {n for n in self.nodes() if n not in start and self.upstream([n]) & start}

    def partitioned(self) -> list[str]:
        """Nodes whose rows depend only on their own customer (can be built for one bucket)."""
        return self.order(
            n
            for n in self.nodes()
            if (self.procedures[n].partition if n in self.procedures else self.models[n].partition) == "customer"
        )

    def task_of(self, node: str) -> str:
        """The flow task that builds a node."""
        return self.procedures[node].task if node in self.procedures else LAYER_TASKS[self.models[node].layer]

    def steps(self) -> list[Step]:
        """Flow tasks in build order: consecutive nodes of one task form one step (a task may recur)."""
        out: list[tuple[str, list[str]]] = []
        for node in self.order(n for n in self.nodes() if self.task_of(n) != "ingest"):
            task = self.task_of(node)
            if out and out[-1][0] == task:
                out[-1][1].append(node)
            else:
                out.append((task, [node]))
        return [Step(task, tuple(nodes)) for task, nodes in out]

    def published(self) -> list[Model]:
        """Models written as Parquet marts, by name."""
        return sorted((m for m in self.models.values() if m.published), key=lambda m: m.name)

    def kept(self) -> list[Model]:
        """Models kept in the published warehouse, by name."""
        return sorted((m for m in self.models.values() if m.kept), key=lambda m: m.name)


def _column_docs(directory: Path) -> dict[str, Any]:
    path = directory / "schema.yml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise CatalogError(f"{path}: expected 'models:' to map model names to their descriptions")
    return models


def load_catalog(models_dir: str | None = None) -> Catalog:
    """Read every model file under `models_dir` (default: the shipped models) and check the graph.

    Loaded once per set of file versions: an edited, added or removed file gives a new catalog.
    """
    root = Path(models_dir) if models_dir else shipped_models_dir()
    if not root.is_dir():
        raise CatalogError(f"models_dir {root} is not a folder")
    files = sorted(p for layer in LAYERS for p in (root / layer).glob("*") if p.suffix in (".sql", ".yml"))
    fingerprint = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    return _load_catalog(str(root), fingerprint)


@functools.lru_cache(maxsize=8)
def _load_catalog(models_dir: str, fingerprint: tuple[tuple[str, int, int], ...]) -> Catalog:
    import importlib

    for module in _PROCEDURE_MODULES:
        importlib.import_module(module)
    root = Path(models_dir)
    models: dict[str, Model] = {}
    with duckdb.connect() as con:
        for layer in LAYERS:
            directory = root / layer
            docs = _column_docs(directory)
            for path in sorted(directory.glob("*.sql")):
                model = parse_model_file(path, layer, docs.get(path.stem), con)
                if model.name in models:
                    raise CatalogError(f"{path}: model {model.name} is defined twice")
                models[model.name] = model
            unknown = sorted(set(docs) - {p.stem for p in directory.glob("*.sql")})
            if unknown:
                raise CatalogError(f"{directory / 'schema.yml'}: describes models that have no SQL file: {unknown}")
    for proc in _PROCEDURES.values():
        for out in proc.outputs:
            if out.name in models:
                raise CatalogError(f"table {out.name} is made by procedure {proc.name} and by a SQL file")
            models[out.name] = out
    for m in models.values():
        if m.procedure is not None and m.procedure not in _PROCEDURES:
            known = sorted(_PROCEDURES)
            raise CatalogError(f"{m.path}: header field 'procedure' names {m.procedure!r}; known: {known}")
        missing = sorted(t for t in m.depends_on if t not in models and t not in SOURCES)
        if missing:
            raise CatalogError(f"{m.path or m.name}: reads {missing}, which no model builds")
    catalog = Catalog(models_dir=str(root), models=models, procedures=dict(_PROCEDURES))
    catalog.order()
    catalog.steps()
    return catalog


def materialize(
    con: duckdb.DuckDBPyConnection,
    model: Model,
    params: Mapping[str, Any],
    inputs: Mapping[str, str] | None = None,
) -> None:
    """Create a SQL model's table, temp table or view from its SQL with its declared parameters bound.

    `inputs` gives tables the model reads (by name) as SQL instead: they are computed inside its statement.
    """
    if model.sql is None:
        raise CatalogError(f"model {model.name} is made by procedure {model.procedure}, not from SQL")
    missing = [p for p in model.params if p not in params]
    if missing:
        raise CatalogError(f"model {model.name}: the run gives no value for parameter(s) {missing}")
    kind = {"table": "table", "temp": "temp table", "view": "view"}[model.materialized]
    sql = model.sql
    if inputs:
        # A CTE of the input's name shadows the table inside the model's own query.
        ctes = ",\n".join(f"{db.quote_ident(name)} as (\n{body}\n)" for name, body in inputs.items())
        sql = f"with {ctes}\nselect * from (\n{model.sql}\n)"
    db.execute(con, f"create or replace {kind} {db.quote_ident(model.name)} as\n{sql}", params)


def insert_into(con: duckdb.DuckDBPyConnection, model: Model, params: Mapping[str, Any]) -> None:
    """Append a model's rows to its existing table (the per-level passes of a procedure)."""
    if model.sql is None:
        raise CatalogError(f"model {model.name} has no SQL")
    db.execute(con, f"insert into {db.quote_ident(model.name)}\n{model.sql}", params)


def build(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    context: Any,
    nodes: Iterable[str] | None = None,
    *,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build `nodes` (default: every node after ingest) in dependency order; return counts per node.

    `params` overrides the run's parameters, e.g. `{"bucket": 3}` to build the partitioned models for one
    customer bucket, or `{"customer_keys": [...]}` for a set of customers.
    """
    bound = {**context.params, **(params or {})}
    wanted = [
        n
        for n in (nodes if nodes is not None else catalog.nodes())
        if n not in catalog.procedures or catalog.procedures[n].run is not None
    ]
    out: dict[str, Any] = {}
    for node in progress.track(catalog.order(wanted), "build", label=str):
        if node in catalog.procedures:
            run = catalog.procedures[node].run
            assert run is not None  # filtered above
            out[node] = dict(run(con, context, bound))
        else:
            model = catalog.models[node]
            materialize(con, model, bound)
            out[node] = db.fetch(con, f"select count(*) from {db.quote_ident(node)}")[0][0]
    return out


def drop_unpublished(con: duckdb.DuckDBPyConnection, catalog: Catalog) -> list[str]:
    """Drop every catalog table the published warehouse does not keep; return their names."""
    present = {r[0] for r in db.fetch(con, "select table_name from duckdb_tables() where not temporary")}
    dropped = sorted(m.name for m in catalog.models.values() if not m.kept and m.name in present)
    for name in dropped:
        db.execute(con, f"drop table if exists {db.quote_ident(name)}")
    return dropped
