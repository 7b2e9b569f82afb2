"""PostgreSQL for greenlet workers: the connections of a worker process are kept in a pool of its own.

Django keeps a database connection per thread. Under gevent and eventlet every request runs in a greenlet of
its own, a thread to Django: kept connections (CONN_MAX_AGE) would pile up, one per greenlet that ever ran,
against PostgreSQL's max_connections. Without them (CONN_MAX_AGE=0) every request opened a connection of its
own, whose SCRAM authentication cost more than the request: gunicorn-gevent served 144 req/s where
gunicorn-sync served 1,121 (README, benchmark matrix).

With this engine, when Django closes a request's connection (at the request's end, CONN_MAX_AGE=0) it goes
back to its process's pool instead, if it is healthy and outside a transaction, and the next request takes it.
A process holds as many connections as requests it runs at once, and keeps at most DB_POOL_SIZE idle ones,
each for at most DB_POOL_IDLE_S seconds.
"""

from __future__ import annotations

import os
import time

from django.db.backends.postgresql import base
from psycopg2.extensions import TRANSACTION_STATUS_IDLE

SIZE = int(os.environ.get("DB_POOL_SIZE", "8"))
IDLE_S = float(os.environ.get("DB_POOL_IDLE_S", "30"))


class Pool:
    """Idle connections of one process; a forked child starts with none (its parent's are not its own)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.idle: list[tuple[object, float]] = []  # (connection, since when idle), most recent last
        self.inherited: list[object] = []  # a parent's: never used, never closed (that would end the parent's)

    def mine(self) -> list[tuple[object, float]]:
        if os.getpid() != self.pid:
            self.inherited.extend(connection for connection, _ in self.idle)
            self.idle, self.pid = [], os.getpid()
        return self.idle

    def take(self) -> object | None:
        idle = self.mine()
        now = time.monotonic()
        while idle:
            connection, since = idle.pop()
            if not connection.closed and now - since <= IDLE_S:
                return connection
            connection.close()
        return None

    def give_back(self, connection) -> bool:
        idle = self.mine()
        if connection.closed or len(idle) >= SIZE or connection.get_transaction_status() != TRANSACTION_STATUS_IDLE:
            return False
        idle.append((connection, time.monotonic()))
        return True


POOL = Pool()


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        connection = POOL.take()
        if connection is None:
            return super().get_new_connection(conn_params)
        # what Django's own sets when it connects (a pooled connection keeps the level it was made with)
        self.isolation_level = base.IsolationLevel(
            self.settings_dict["OPTIONS"].get("isolation_level", base.IsolationLevel.READ_COMMITTED))
        return connection

    def _close(self):
        if self.connection is not None and not self.errors_occurred and POOL.give_back(self.connection):
            return
        super()._close()
