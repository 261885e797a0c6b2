-- registry_service schema, version 1.
--
-- Applied by registry_service.migrations.migrate() inside one transaction, under an advisory
-- lock, and recorded in schema_migrations. Never edit an applied file: add a new one.

-- Learnware ids come from this sequence and are never reused: nextval() is not rolled back, a
-- deleted learnware keeps its row (state DELETED), and the sequence survives restarts.
CREATE SEQUENCE learnware_number_seq AS bigint START WITH 1 NO CYCLE;

CREATE TABLE learnwares (
    id text PRIMARY KEY CHECK (id ~ '^lw-[0-9]{8,}$'),
    number bigint NOT NULL UNIQUE CHECK (number > 0),
    owner text NOT NULL,
    state text NOT NULL DEFAULT 'PENDING'
        CHECK (state IN ('PENDING', 'CHECKING', 'ACTIVE', 'REJECTED', 'DELETED')),
    state_reason text NOT NULL DEFAULT '',
    semantic jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(semantic) = 'object'),
    -- The semantic Name, for ordering by name.
    display_name text GENERATED ALWAYS AS (coalesce(semantic #>> '{Name,Values}', '')) STORED,
    package_sha256 text NOT NULL CHECK (package_sha256 ~ '^[0-9a-f]{64}$'),
    package_size bigint NOT NULL CHECK (package_size >= 0),
    package_content_type text NOT NULL DEFAULT 'application/zip',
    -- Opaque version tag, replaced on every change (AIP-154).
    etag text NOT NULL DEFAULT gen_random_uuid()::text,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    delete_time timestamptz,
    CONSTRAINT learnwares_delete_time_check CHECK ((state = 'DELETED') = (delete_time IS NOT NULL))
);

-- One live learnware per package: registering the same bytes twice is ALREADY_EXISTS.
CREATE UNIQUE INDEX learnwares_live_package_key ON learnwares (package_sha256)
    WHERE state <> 'DELETED';
CREATE INDEX learnwares_create_time_idx ON learnwares (create_time, number);
CREATE INDEX learnwares_display_name_idx ON learnwares (display_name, number);
CREATE INDEX learnwares_owner_idx ON learnwares (owner, number);
CREATE INDEX learnwares_state_idx ON learnwares (state);
CREATE INDEX learnwares_semantic_idx ON learnwares USING gin (semantic jsonb_path_ops);

-- Statistical specifications, per package version: an event's snapshot names the package it
-- saw, so its specifications can be read back exactly even after a package is replaced.
CREATE TABLE specifications (
    learnware_id text NOT NULL REFERENCES learnwares (id),
    package_sha256 text NOT NULL,
    name text NOT NULL CHECK (name <> ''),
    file_name text NOT NULL,
    type text NOT NULL,
    dimension integer,
    -- The specification JSON exactly as the package holds it.
    spec_json text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (learnware_id, package_sha256, name)
);

-- Transactional outbox: every change to a learnware appends one event in the same
-- transaction. Writers serialise their appends (an advisory lock held to commit), so events
-- become visible in sequence order and a reader never sees a gap filled in later.
CREATE TABLE change_events (
    sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    learnware_id text NOT NULL,
    type text NOT NULL CHECK (type IN ('CREATED', 'UPDATED', 'STATE_CHANGED', 'DELETED')),
    snapshot jsonb NOT NULL,
    event_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX change_events_learnware_idx ON change_events (learnware_id, sequence);

-- Wake watchers: the notification is delivered at commit, never for a rolled-back event.
CREATE FUNCTION lwdock_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lwdock_changes', NEW.sequence::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER change_events_notify AFTER INSERT ON change_events
    FOR EACH ROW EXECUTE FUNCTION lwdock_notify_change();

-- Idempotent creates (AIP-155): a retry with the same request_id returns the first result.
CREATE TABLE uploads (
    request_id text PRIMARY KEY CHECK (request_id <> ''),
    learnware_id text NOT NULL REFERENCES learnwares (id),
    kind text NOT NULL CHECK (kind IN ('CREATE', 'REPLACE')),
    sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX uploads_learnware_idx ON uploads (learnware_id);

-- Submission checks, consumed with FOR UPDATE SKIP LOCKED; a worker holds a lease
-- (locked_until) and a job whose lease ran out is handed to another worker.
CREATE TABLE check_jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    learnware_id text NOT NULL REFERENCES learnwares (id),
    package_sha256 text NOT NULL,
    state text NOT NULL DEFAULT 'QUEUED'
        CHECK (state IN ('QUEUED', 'RUNNING', 'DONE', 'FAILED', 'CANCELLED')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    not_before timestamptz NOT NULL DEFAULT now(),
    locked_by text,
    locked_until timestamptz,
    last_error text NOT NULL DEFAULT '',
    passed boolean,
    reason text NOT NULL DEFAULT '',
    log text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    start_time timestamptz,
    end_time timestamptz
);
CREATE INDEX check_jobs_queued_idx ON check_jobs (not_before, id) WHERE state = 'QUEUED';
CREATE INDEX check_jobs_running_idx ON check_jobs (locked_until, id) WHERE state = 'RUNNING';
CREATE INDEX check_jobs_learnware_idx ON check_jobs (learnware_id, id);

-- API tokens: only the sha256 of the secret is stored.
CREATE SEQUENCE token_number_seq AS bigint START WITH 1 NO CYCLE;

CREATE TABLE tokens (
    -- The {token} part of `tokens/{token}`, from token_number_seq like learnware ids.
    id text PRIMARY KEY CHECK (id ~ '^tk-[0-9]{8,}$'),
    number bigint NOT NULL UNIQUE,
    principal text NOT NULL CHECK (principal <> ''),
    role text NOT NULL CHECK (role IN ('READER', 'DEVELOPER', 'ADMIN')),
    token_sha256 text NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    display_name text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz,
    revoked boolean NOT NULL DEFAULT false,
    revoke_time timestamptz
);
CREATE INDEX tokens_principal_idx ON tokens (principal, number);
