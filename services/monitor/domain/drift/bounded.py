"""Drift reports in bounded memory: the data is read a group of columns at a time, never whole.

A report needs each column's values whole (K-S and Wasserstein work on every sorted value: exact, no
sketches), but never two columns at once. So the columns are split into groups whose working set fits
a memory bound; for each group the reference columns are read and profiled, then the current columns
are read and compared, and both are dropped before the next group is read. Only the columns' results
(summaries and display histograms, of fixed size) are kept. The verdicts are the ones `compute_drift_report`
gives on the whole tables, since every column is computed by the same `column_drift`.

The columns of a group are worked on by a few threads at once (sorting and numpy's array arithmetic
release the GIL), one per core by default; the plan makes room for each thread's working set.

The bound is on the whole process's resident memory: what the process already holds is subtracted
before planning. It cannot go below one column's working set (about `WORKING_COPIES` times the larger
side of the largest column, per thread): a group is never smaller than one column.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

import pyarrow as pa

from services.monitor.domain.drift.columns import ColumnType, with_text_names
from services.monitor.domain.drift.engine import DriftOptions, assemble_report, column_drift
from services.monitor.domain.drift.profile import ColumnProfile, ProfileWriter, ReferenceProfile, profile_column
from services.monitor.domain.drift.report import ColumnDrift, DriftReport

Result = TypeVar("Result")

# Besides both sides' values of a group, one column is being worked on: its Arrow values, their float64
# copy, the finite values being sorted, and the test's temporaries (a tied column expanded again).
WORKING_COPIES = 6
# Reading a group from Parquet holds its pages and the decoded values at once.
READ_COPIES = 2
# Each value becomes at least a float64 (labels are counted, so they stay at their encoded size).
VALUE_BYTES = 8
# More threads than this add memory (a working set each) for little: reading and sorting share the
# memory bandwidth.
MAX_THREADS = 4


def default_threads() -> int:
    """One thread per core this process may run on, at most `MAX_THREADS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_THREADS))


class ColumnSource(Protocol):
    """A table read some columns at a time."""

    @property
    def names(self) -> list[str]: ...

    @property
    def num_rows(self) -> int: ...

    def column_bytes(self, name: str) -> int:
        """About how much memory the column takes once read."""
        ...

    def read(self, names: Sequence[str]) -> pa.Table: ...


class TableSource:
    """A table already in memory (CSV input, tests): nothing to bound, but the same code path."""

    def __init__(self, table: pa.Table) -> None:
        self._table = with_text_names(table)

    @property
    def names(self) -> list[str]:
        return list(self._table.column_names)

    @property
    def num_rows(self) -> int:
        return int(self._table.num_rows)

    def column_bytes(self, name: str) -> int:
        return max(int(self._table.column(name).nbytes), self.num_rows * VALUE_BYTES)

    def read(self, names: Sequence[str]) -> pa.Table:
        return self._table.select(list(names))


class ParquetSource:
    """A Parquet file (a path or a seekable handle, e.g. a ranged-GET S3 file): only the asked columns
    are decoded, sized beforehand from the footer."""

    def __init__(self, file: str | Path | BinaryIO) -> None:
        import pyarrow.parquet as pq

        # Without pre-buffering: it would keep the raw pages of the last read cached in the reader.
        self._file = pq.ParquetFile(file, pre_buffer=False)
        metadata = self._file.metadata
        self._num_rows = int(metadata.num_rows)
        self._names = list(self._file.schema_arrow.names)
        decoded: dict[str, int] = dict.fromkeys(self._names, 0)
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            for index in range(row_group.num_columns):
                chunk = row_group.column(index)
                if chunk.path_in_schema in decoded:
                    decoded[chunk.path_in_schema] += int(chunk.total_uncompressed_size)
        self._decoded = decoded

    @property
    def names(self) -> list[str]:
        return self._names

    @property
    def num_rows(self) -> int:
        return self._num_rows

    def column_bytes(self, name: str) -> int:
        return max(self._decoded.get(name, 0), self._num_rows * VALUE_BYTES)

    def read(self, names: Sequence[str]) -> pa.Table:
        return self._file.read(columns=list(names), use_threads=True)


@dataclass(frozen=True)
class GroupProgress:
    # 1-based number of the group just finished; 0 once before the first group, when the plan is made.
    group: int
    groups: int
    columns_done: int
    columns: int


def plan_groups(sizes: Mapping[str, tuple[int, int]], budget: int, threads: int = 1) -> list[list[str]]:
    """Consecutive columns, as many per group as fit `budget` bytes; `sizes` are each column's reference
    and current bytes. A group holds its reference profiles while its current columns are read, and a
    read needs about twice what it decodes (the file's pages, then the values), so a group takes its
    reference bytes, twice its current bytes and, per thread, the working set of its largest column.
    At least one column per group."""
    groups: list[list[str]] = []
    group: list[str] = []
    held = largest = 0
    for name, (reference_bytes, current_bytes) in sizes.items():
        needs = reference_bytes + READ_COPIES * current_bytes
        widest = max(largest, reference_bytes, current_bytes)
        if group and held + needs + threads * WORKING_COPIES * widest > budget:
            groups.append(group)
            group, held, widest = [], 0, max(reference_bytes, current_bytes)
        group.append(name)
        held += needs
        largest = widest
    if group:
        groups.append(group)
    return groups


def resident_bytes() -> int:
    """The process's resident memory now (Linux), 0 where it cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def bounded_drift_report(
    reference: ColumnSource | ReferenceProfile,
    current: ColumnSource,
    memory_bytes: int,
    options: DriftOptions | None = None,
    column_types: Mapping[str, ColumnType | str] | None = None,
    progress: Callable[[GroupProgress], None] | None = None,
    save_profile: ProfileWriter | None = None,
    threads: int | None = None,
    columns: Sequence[str] | None = None,
) -> DriftReport:
    """The report `compute_drift_report` gives, reading `reference` (data, or a stored profile) and
    `current` one group of columns at a time so that the process stays within `memory_bytes`, each
    group's columns worked on by `threads` threads (default: one per core). `save_profile` receives the
    reference's column profiles as they are made; `progress` is called once the groups are planned and
    after each group. `columns` limits the report to these of the reference's columns (a shard's)."""
    options = options or DriftOptions()
    threads = threads or default_threads()
    named = {name: ColumnType(kind) for name, kind in (column_types or {}).items()}
    if isinstance(reference, ReferenceProfile):
        names, reference_rows = list(reference.columns), reference.row_count
        # A stored column's size is not known before it is read; its rows as float64 bound it.
        reference_bytes = {name: reference_rows * VALUE_BYTES for name in names}
    else:
        names, reference_rows = reference.names, reference.num_rows
        reference_bytes = {name: reference.column_bytes(name) for name in names}
    if columns is not None:
        wanted = set(columns)
        names = [name for name in names if name in wanted]
    present = set(current.names)
    sizes = {name: (reference_bytes[name], current.column_bytes(name) if name in present else 0) for name in names}
    groups = plan_groups(sizes, memory_bytes - resident_bytes(), threads)
    results: dict[str, ColumnDrift] = {}
    if progress is not None:
        progress(GroupProgress(0, len(groups), 0, len(names)))
    with ThreadPoolExecutor(threads, thread_name_prefix="drift") as pool:
        for number, group in enumerate(groups, start=1):
            profiles = _reference_columns(reference, group, named, pool)
            if save_profile is not None:
                for name, column in profiles.items():
                    save_profile.add(name, column)
            compare = partial(_compare, profiles, options, named)
            results |= _each_column(current, [name for name in group if name in present], compare, pool)
            # Columns missing from the current data.
            results |= {name: compare(name, None) for name in group if name not in present}
            del profiles, compare
            _release_freed_memory()
            if progress is not None:
                progress(GroupProgress(number, len(groups), sum(map(len, groups[:number])), len(names)))
    ordered = {name: results[name] for name in names}
    return assemble_report(ordered, options, reference_rows, current.num_rows)


def _release_freed_memory() -> None:
    """Hand freed memory back to the system so the next group starts low: Arrow's allocator keeps freed
    blocks for reuse, and glibc's malloc keeps freed numpy buffers on its heap (after large buffers are
    freed it raises its mmap threshold, so buffers of a few MB come from the heap, not their own maps)."""
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def _compare(
    profiles: Mapping[str, ColumnProfile],
    options: DriftOptions,
    named: Mapping[str, ColumnType],
    name: str,
    current: pa.Table | None,
) -> ColumnDrift:
    column = profiles[name]
    return column_drift(name, column, current, options, named.get(name) or column.named_type)


def _reference_columns(
    reference: ColumnSource | ReferenceProfile,
    names: list[str],
    named: Mapping[str, ColumnType],
    pool: ThreadPoolExecutor,
) -> dict[str, ColumnProfile]:
    if isinstance(reference, ReferenceProfile):
        return {name: reference.columns[name] for name in names}
    return _each_column(reference, names, lambda name, frame: profile_column(frame, name, named.get(name)), pool)


def _each_column(
    source: ColumnSource, names: list[str], work: Callable[[str, pa.Table], Result], pool: ThreadPoolExecutor
) -> dict[str, Result]:
    """`work` on each column of the group, the group read at once (decoded in parallel) and its columns
    handed to the pool one at a time, each column's Arrow data released as soon as its work is done."""
    if not names:
        return {}
    table = source.read(names)
    columns = {name: table.column(name) for name in names}
    del table
    futures = {name: pool.submit(work, name, pa.table({name: columns.pop(name)})) for name in names}
    return {name: future.result() for name, future in futures.items()}
