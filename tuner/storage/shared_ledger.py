"""The baseline's evidence, shared by every study on one storage: decoded once per model × split content × baseline
settings, and read by any study, worker or export that needs the same.

Each ledger is kept in a study of its own (named `dtune-baseline:<key>`, no trials) in the storage the studies
already share, so every worker reaches it with the database it has, and it outlives the studies that grew it.
"""

from __future__ import annotations

import dataclasses

import optuna

from .optuna_internals import backend, quiet_optuna
from .record import BaselineSummary, LedgerState, StudyRecord

PREFIX = "dtune-baseline:"
_LEDGER = "ledger"


def is_ledger_study(name: str) -> bool:
    """A study that holds a shared baseline ledger, not a tuning study."""
    return name.startswith(PREFIX)


class SharedLedger:
    """One ledger (a positional prefix of a split's items) under its key in a study storage."""

    def __init__(self, storage: optuna.storages.BaseStorage | optuna.Study, key: str) -> None:
        self.storage, self.key = backend(storage), key

    @property
    def name(self) -> str:
        return PREFIX + self.key

    def _study_id(self, create: bool) -> int | None:
        try:
            return self.storage.get_study_id_from_name(self.name)
        except KeyError:
            if not create:
                return None
        try:
            with quiet_optuna():  # not Optuna's "A new study created in RDB with name: …" on stderr
                return self.storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], self.name)
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it meanwhile
            return self.storage.get_study_id_from_name(self.name)

    def read(self) -> LedgerState:
        sid = self._study_id(create=False)
        raw = None if sid is None else self.storage.get_study_user_attrs(sid).get(_LEDGER)
        return LedgerState(**raw) if raw else LedgerState()

    def write(self, state: LedgerState) -> None:
        sid = self._study_id(create=True)
        assert sid is not None
        self.storage.set_study_user_attr(sid, _LEDGER, dataclasses.asdict(state))


def study_ledger(study: optuna.Study) -> LedgerState:
    """The baseline evidence a study judges its trials by: its shared ledger, or the one it kept in itself (a
    study written before ledgers were shared, a replay)."""
    record = StudyRecord(study)
    if record.ledger_key:
        shared = SharedLedger(study, record.ledger_key).read()
        own = record.own_ledger
        return own if own is not None and own.n > shared.n else shared
    return record.own_ledger or LedgerState()


def adopt(study: optuna.Study, key: str) -> SharedLedger:
    """Point `study` at the shared ledger `key`, first handing over what it kept in itself when that covers more
    items (a study resumed after the upgrade keeps its baseline's outcomes instead of decoding them again)."""
    record, shared = StudyRecord(study), SharedLedger(study, key)
    own = record.own_ledger
    if own is not None and own.n > shared.read().n:
        shared.write(own)
    record.set_ledger_key(key)
    return shared


def baseline_summary(study: optuna.Study) -> BaselineSummary | None:
    """The baseline's trial and reference, with its accuracy (labelled tasks) and items on the study's ledger."""
    stored = StudyRecord(study).baseline
    ledger = study_ledger(study)
    if stored is None and not ledger.n:
        return None
    stored = stored or BaselineSummary()
    if not ledger.n:
        return stored
    return dataclasses.replace(stored, accuracy=ledger.accuracy if ledger.labelled else None, n=ledger.n)
