"""The schema as migrations: entry N takes a database from version N-1 to N."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        login TEXT NOT NULL UNIQUE COLLATE NOCASE,
        name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE media_servers (
        id INTEGER PRIMARY KEY,
        url TEXT NOT NULL UNIQUE
    );
    CREATE TABLE cameras (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        media_server_id INTEGER NOT NULL REFERENCES media_servers(id),
        created_at TEXT NOT NULL
    );
    CREATE TABLE camera_grants (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        camera_id INTEGER NOT NULL REFERENCES cameras(id) ON DELETE CASCADE,
        PRIMARY KEY (user_id, camera_id)
    ) WITHOUT ROWID;
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        device TEXT NOT NULL,
        client TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        ended_at TEXT
    ) WITHOUT ROWID;
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE TABLE downloads (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('link', 'archive')),
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        session_id TEXT NOT NULL,
        camera_id INTEGER NOT NULL REFERENCES cameras(id) ON DELETE CASCADE,
        device TEXT NOT NULL,
        client TEXT NOT NULL,
        range_from REAL NOT NULL,
        range_to REAL NOT NULL,
        status TEXT NOT NULL,
        progress INTEGER NOT NULL DEFAULT 0,
        size INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        message TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        expires_at REAL
    );
    CREATE INDEX downloads_user_created ON downloads(user_id, kind, created_at);
    CREATE INDEX downloads_status ON downloads(kind, status);
    CREATE INDEX downloads_device ON downloads(device, camera_id, range_from, range_to);
    """,
    # An archive is shared only within its own device session (never across users who send
    # the same X-UUID), and the per-device cap is counted from an index.
    """
    DROP INDEX downloads_device;
    CREATE INDEX downloads_session_range
        ON downloads(session_id, camera_id, range_from, range_to) WHERE kind = 'archive';
    CREATE INDEX downloads_device_status
        ON downloads(user_id, device, status) WHERE kind = 'archive';
    """,
    # What a ready archive holds, measured while it was written: seconds of footage, SHA-256.
    """
    ALTER TABLE downloads ADD COLUMN duration REAL;
    ALTER TABLE downloads ADD COLUMN sha256 TEXT;
    """,
    # Field-size history (a year of rows): every list, filter and sort of the API and the
    # history page reads an index in its own order (equality columns, then created_at; the
    # rowid breaks ties), so a page costs its rows; totals come from download_totals, kept in
    # step by triggers on update and delete, and on insert by the store's group commit (one
    # upsert per batch, not one per row); cleanup finds due archives by expiry.
    """
    CREATE INDEX downloads_created ON downloads(created_at);
    CREATE INDEX downloads_kind_created ON downloads(kind, created_at);
    CREATE INDEX downloads_user_all_created ON downloads(user_id, created_at);
    CREATE INDEX downloads_camera_created ON downloads(camera_id, created_at);
    CREATE INDEX downloads_camera_kind_created ON downloads(camera_id, kind, created_at);
    CREATE INDEX downloads_user_camera_created ON downloads(user_id, camera_id, created_at);
    CREATE INDEX downloads_user_camera_kind_created
        ON downloads(user_id, camera_id, kind, created_at);
    CREATE INDEX downloads_status_created ON downloads(kind, status, created_at);
    CREATE INDEX downloads_user_status_created ON downloads(user_id, kind, status, created_at);
    CREATE INDEX downloads_camera_status_created
        ON downloads(camera_id, kind, status, created_at);
    CREATE INDEX downloads_user_camera_status_created
        ON downloads(user_id, camera_id, kind, status, created_at);
    DROP INDEX downloads_status;
    CREATE INDEX downloads_status_expiry ON downloads(kind, status, expires_at);
    CREATE TABLE download_totals (
        user_id INTEGER NOT NULL,
        camera_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (user_id, camera_id, kind, status)
    ) WITHOUT ROWID;
    CREATE INDEX download_totals_camera ON download_totals(camera_id, kind, status);
    INSERT INTO download_totals (user_id, camera_id, kind, status, n)
        SELECT user_id, camera_id, kind, status, count(*) FROM downloads GROUP BY 1, 2, 3, 4;
    CREATE TRIGGER download_totals_delete AFTER DELETE ON downloads BEGIN
        UPDATE download_totals SET n = n - 1
            WHERE user_id = old.user_id AND camera_id = old.camera_id
            AND kind = old.kind AND status = old.status;
    END;
    CREATE TRIGGER download_totals_update AFTER UPDATE OF user_id, camera_id, kind, status
        ON downloads
        WHEN old.status IS NOT new.status OR old.kind IS NOT new.kind
            OR old.user_id IS NOT new.user_id OR old.camera_id IS NOT new.camera_id
    BEGIN
        UPDATE download_totals SET n = n - 1
            WHERE user_id = old.user_id AND camera_id = old.camera_id
            AND kind = old.kind AND status = old.status;
        INSERT INTO download_totals (user_id, camera_id, kind, status, n)
            VALUES (new.user_id, new.camera_id, new.kind, new.status, 1)
            ON CONFLICT DO UPDATE SET n = n + 1;
    END;
    """,
    # The signed manifest of a ready archive (a compact JWS), made once when it became ready;
    # the first recorded moment of a link's range, where its links start (MediaMTX answers 404
    # for a start inside a gap).
    """
    ALTER TABLE downloads ADD COLUMN manifest TEXT;
    ALTER TABLE downloads ADD COLUMN recorded_from REAL;
    """,
    # A cheap cleanup sweep: expiring an archive touched six status indexes and ran a trigger
    # per row. Expired rows (most archives, in time) leave the status indexes: a listing of
    # expired archives reads the kind indexes instead, where they are most of the rows. The
    # due and pending-count indexes hold only the statuses their queries ask for, so expiring
    # leaves the pending one alone. Totals on update are kept by the store in the same
    # transaction (one upsert per batch, as on insert), not by a trigger per row.
    """
    DROP INDEX downloads_status_created;
    DROP INDEX downloads_user_status_created;
    DROP INDEX downloads_camera_status_created;
    DROP INDEX downloads_user_camera_status_created;
    DROP INDEX downloads_status_expiry;
    DROP INDEX downloads_device_status;
    CREATE INDEX downloads_status_created ON downloads(kind, status, created_at)
        WHERE status <> 'expired';
    CREATE INDEX downloads_user_status_created ON downloads(user_id, kind, status, created_at)
        WHERE status <> 'expired';
    CREATE INDEX downloads_camera_status_created
        ON downloads(camera_id, kind, status, created_at) WHERE status <> 'expired';
    CREATE INDEX downloads_user_camera_status_created
        ON downloads(user_id, camera_id, kind, status, created_at) WHERE status <> 'expired';
    CREATE INDEX downloads_ready_expiry ON downloads(expires_at)
        WHERE kind = 'archive' AND status = 'ready';
    CREATE INDEX downloads_device_status ON downloads(user_id, device, status)
        WHERE kind = 'archive' AND status IN ('queued', 'in progress');
    DROP TRIGGER download_totals_update;
    """,
    # Beyond one box: an archive job is held by the process working it (`claimed_by`) until
    # `lease_until` (unix seconds), which that process keeps moving forward; a lapsed lease
    # lets another process take the job over. Keys and secrets shared by every process live
    # in `secrets` when the database is shared (with SQLite they stay files in DATA/keys).
    """
    ALTER TABLE downloads ADD COLUMN claimed_by TEXT;
    ALTER TABLE downloads ADD COLUMN lease_until REAL;
    CREATE INDEX downloads_claimable ON downloads(id)
        WHERE kind = 'archive' AND status IN ('queued', 'in progress');
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        created_at TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # A sweep that touches no status index. The four status indexes hold only archives that
    # are neither ready nor expired (queued, running, failed, cancelled): a ready archive is
    # listed from the due index (ready ones are few, bounded by their lifetime rather than by
    # the history), an expired one from the kind indexes (where, in time, they are most of
    # the archives), and links (always ready) have no status filter. So expiring an archive
    # changes its row, the due index and the totals only, and a link is written to four
    # indexes fewer. The WHERE is two inequalities, not an IN list: SQLite evaluates it for
    # every row it updates, and builds an IN list's lookup table anew each time. A query
    # meant to use these indexes repeats the WHERE verbatim (vms/store/history.py).
    """
    DROP INDEX downloads_status_created;
    DROP INDEX downloads_user_status_created;
    DROP INDEX downloads_camera_status_created;
    DROP INDEX downloads_user_camera_status_created;
    CREATE INDEX downloads_status_created ON downloads(kind, status, created_at)
        WHERE kind = 'archive' AND status <> 'ready' AND status <> 'expired';
    CREATE INDEX downloads_user_status_created ON downloads(user_id, kind, status, created_at)
        WHERE kind = 'archive' AND status <> 'ready' AND status <> 'expired';
    CREATE INDEX downloads_camera_status_created
        ON downloads(camera_id, kind, status, created_at)
        WHERE kind = 'archive' AND status <> 'ready' AND status <> 'expired';
    CREATE INDEX downloads_user_camera_status_created
        ON downloads(user_id, camera_id, kind, status, created_at)
        WHERE kind = 'archive' AND status <> 'ready' AND status <> 'expired';
    """,
)
