//! One `# HELP` line for every metric dialtone exports: the list of what
//! `/metrics` holds, kept where an operator (and a dashboard test) can read
//! it. A metric recorded anywhere must be described here; a test in
//! `tests/service.rs` compares a scrape against this list.

use metrics::{describe_counter, describe_gauge, describe_histogram, Label, Unit};

/// Counters: (name, help).
pub const COUNTERS: &[(&str, &str)] = &[
    (
        "dialtone_tftp_read_timeouts_total",
        "TFTP transfers of static files ended because a read of the file took longer than the transfer's timeout (a hung disk or network mount); the client was told \"read timed out\".",
    ),
    (
        "dialtone_lookup_rate_limited_total",
        "Caller-name lookups answered 429 because their tenant's keys were past lookup.tenant_rate and tenant_burst; the WARN log names the tenant, once a minute at most.",
    ),
    (
        "dialtone_log_lines_dropped_total",
        "Log lines lost, by reason: queue_full (the log output had not kept up with 8 MiB of lines waiting: a stalled journald, a hung disk), write_failed (writing to stderr or log.file failed: a full disk, a closed pipe).",
    ),
    (
        "dialtone_unclaimed_dropped_total",
        "Unclaimed-device sightings dropped, by reason: queue_full, tenant_share (its tenant held its share of the queue), shutdown, write_failed, panic.",
    ),
    (
        "dialtone_unclaimed_claimed_total",
        "Unclaimed devices claimed as phones through the admin API.",
    ),
    (
        "dialtone_admin_database_given_up_total",
        "Tenants' database-bound admin requests whose work was dropped at twice database.request_timeout_s, the database never having answered (a dead connection): their admission places are given back, the PostgreSQL connection they held is closed (dialtone_store_connections_closed_total) and a write not yet committed is rolled back. The WARN log names the tenant.",
    ),
    (
        "dialtone_resync_refetch_reads_timed_out_total",
        "Provisioning-history reads of the resync refetch watch given up after 5 s (a database that never answered); the watch goes on next round.",
    ),
    (
        "dialtone_admin_database_refused_total",
        "Admin API requests refused with 429 before touching the database, by scope: tenant (their tenant already ran its share of database-bound requests), all_tenants (the node's tenants together held all the pool leaves them), others_waiting (a tenant already running one was held to it while another tenant waited for a place), bodies (a tenant, or the node, already read its share of request bodies at once), checks (a tenant already ran 4 template checks, previews and source tests at once), write_rate (a tenant's write past its writes_per_minute).",
    ),
    (
        "dialtone_history_dropped_total",
        "Provisioning-history records dropped, by reason: queue_full, tenant_share (its tenant held its share of the queue), phone_rate (a fetch not served, its phone had added 30 rows of that kind that minute; refusals and failures past admission are counted apart), shutdown, write_failed, panic.",
    ),
    (
        "dialtone_tls_handshake_failures_total",
        "TLS handshakes of provisioning.https_listen that failed, by reason: protocol_version (the client offered nothing newer than TLS 1.1), no_shared_cipher (no cipher suite, key exchange group or signature scheme in common: only CBC or RSA-key-exchange suites, say), certificate (the client refused the certificate), timeout (not done within header_timeout), closed (the client closed or reset the connection first: a TCP health check, a phone that gave up), other. dialtone serves TLS 1.2 and 1.3 with AEAD suites and ECDHE only; the INFO log names a failing peer and its reason, once a minute at most (closed ones only at DEBUG).",
    ),
    (
        "dialtone_http_connections_shed_total",
        "HTTP connections refused with 503 past the listener's connection cap (no idle connection or slow reader to make room for them), by listener: api (http.listen), provisioning (provisioning.http_listen), provisioning_tls (provisioning.https_listen), monitoring (http.monitoring_listen); 0 for one the node does not run.",
    ),
    (
        "dialtone_http_idle_evicted_total",
        "HTTP connections closed to make room for a new one at the listener's connection cap because they had sat idle: answered and waiting for a next request for at least a second, or still without a whole first request (headers or a TLS handshake unfinished) for half of header_timeout; the longest idle goes first, before any slow reader. By listener, as dialtone_http_connections_shed_total.",
    ),
    (
        "dialtone_http_slow_readers_evicted_total",
        "HTTP connections closed to make room for a new one at the listener's connection cap because their client had read a waiting response at under 4 KiB/s for a whole window (10 s of waiting); the slowest goes first. By listener, as dialtone_http_connections_shed_total.",
    ),
    (
        "dialtone_lookup_shed_total",
        "Caller-name lookups shed past lookup.max_inflight, by reason (tenant_share: the tenant held its share; full: every slot and the reserve were taken).",
    ),
    (
        "dialtone_lookup_reserve_loads_total",
        "Lookup loads started from the reserve beyond lookup.max_inflight by a tenant holding almost none, while other tenants held every slot.",
    ),
    (
        "dialtone_lookup_source_config_errors_total",
        "Directory sources whose stored settings could not be used.",
    ),
    (
        "dialtone_lookup_resolutions_refused_total",
        "Host names of tenants' directory sources not resolved because too many were resolving already, by limit: tenant (names started by that tenant's sources held its share), node (the node's table was full).",
    ),
    (
        "dialtone_lookup_source_requests_total",
        "Requests to lookup sources, by source kind and outcome.",
    ),
    (
        "dialtone_background_failures_total",
        "Failures of background jobs that carry on after one, by task: snapshot (the periodic snapshot was not written), prune_change_log, prune_history, prune_audit, prune_tokens (a table was not pruned), reload (a SIGHUP reload panicked, or part of it was not applied: an invalid config, a certificate, templates or static files that would not load, a secrets key the next start would refuse), ldap_mirror (a mirrored LDAP source's sync task panicked; it starts again), directory_files (a mirrored source's file or a tenant's kept number readings were not written, a full disk say: served from memory, synced again in full at the next start).",
    ),
    (
        "dialtone_lookup_cache_share_full_total",
        "Lookup answers served but not cached because the answer cache was three quarters full and their tenant held a quarter of it.",
    ),
    (
        "dialtone_lookup_stale_fills_dropped_total",
        "Lookup answers not cached because the tenant's data changed during the load.",
    ),
    (
        "dialtone_lookups_total",
        "Caller-name lookups, by cache outcome and result.",
    ),
    (
        "dialtone_mirror_full_reloads_total",
        "Times the mirror reloaded every row instead of catching up.",
    ),
    (
        "dialtone_provision_requests_total",
        "Provisioning requests, by protocol, vendor and outcome: ok, not_found, refused (a bad path), unauthorized, busy, render_error, error, banned (refused because its source is banned for misses; HTTP(S) answers 429 with Retry-After, the seconds left of the ban).",
    ),
    (
        "dialtone_provisioning_ban_passes_total",
        "Requests from a banned source served because its phone fetched its own files from there before.",
    ),
    (
        "dialtone_provisioning_credentials_closed_total",
        "Phones whose credentials were closed to sources they have not fetched from, after too many wrong answers from such sources.",
    ),
    (
        "dialtone_provisioning_credential_tries_refused_total",
        "Credential answers refused unchecked: the phone's credentials were closed to that source.",
    ),
    (
        "dialtone_provisioning_bans_total",
        "Sources banned for too many misses.",
    ),
    (
        "dialtone_provisioning_misdirected_total",
        "Plain-HTTP provisioning requests refused (421) for a Host name that is neither base_url's nor in provisioning.host_names.",
    ),
    (
        "dialtone_provisioning_misses_total",
        "Misses counted toward a ban, by kind (not_found, refused, login, blind, unknown_model: a common or boot file rendered for a model no phone or template has, still served; respelled: a phone's own file in another spelling than the one cached, still served).",
    ),
    (
        "dialtone_compiled_cache_over_share_total",
        "Compiled templates not kept because their tenant held more than its fair part of the full compiled-template cache (its renders compile them again; nobody else's entries go for them).",
    ),
    (
        "dialtone_directory_uncached_builds_total",
        "Phone directory searches and pages from the 17th on, which the render cache does not keep, built after charging their source a quarter of a miss.",
    ),
    (
        "dialtone_provisioning_digest_replays_total",
        "HTTP Digest answers with the right password on a nonce count already used (a phone's retry, or a replay), refused with a fresh stale challenge and charged no miss.",
    ),
    (
        "dialtone_phone_directory_truncated_total",
        "Phone directory documents cut at the render budget's output bytes (rows past it left out).",
    ),
    (
        "dialtone_provisioning_refused_total",
        "Fetches of a known phone refused by admission, by reason (another_tenants_network: its tenant sets no provisioning networks and the source is inside another tenant's site).",
    ),
    (
        "dialtone_provisioning_sources_evicted_total",
        "Sources forgotten to make room in the full miss table (those owing least first).",
    ),
    (
        "dialtone_render_cache_checked_total",
        "Cached files the self-check rendered again and compared.",
    ),
    (
        "dialtone_render_cache_fills_dropped_total",
        "Renders not cached because the mirror moved on while they ran.",
    ),
    (
        "dialtone_render_cache_over_share_total",
        "Renders of a tenant over its fair part of a full render cache (a quarter, or an equal share of the tenants holding any when more), by outcome (own_dropped: kept in place of its own oldest entries; not_kept: those could not make the room, served and not kept).",
    ),
    (
        "dialtone_render_cache_stale_total",
        "Cached files that differed from a fresh render (should stay 0).",
    ),
    (
        "dialtone_render_cache_total",
        "Render cache lookups, by result (hit, miss, outdated).",
    ),
    (
        "dialtone_render_pool_refused_total",
        "Renders refused (the phone is answered busy) because too many were waiting, by reason: full (provisioning.render_queue renders of all tenants were waiting), tenant_share (the render's tenant held its share of the queue: provisioning.render_tenant_queue, or a quarter of the room the others leave).",
    ),
    (
        "dialtone_render_pool_timeouts_total",
        "Renders whose caller stopped waiting at the render time budget.",
    ),
    (
        "dialtone_list_walks_refused_total",
        "Tenants' admin lists refused (answered 503 busy) because too many walks were waiting on the list-walk lane, by reason: full (64 walks of all tenants, or provisioning.render_queue if smaller, were waiting), tenant_share (the tenant had 4 walks waiting, or a quarter of the room the others leave).",
    ),
    (
        "dialtone_list_walk_timeouts_total",
        "Tenants' admin lists answered 503 because their walk ran past its 10 s; the walk itself runs on to its end.",
    ),
    (
        "dialtone_request_panics_total",
        "Request handlers that panicked (answered 500).",
    ),
    (
        "dialtone_resync_answered_total",
        "Final SIP responses to resync NOTIFYs, by status class (2xx, 4xx, ...).",
    ),
    (
        "dialtone_resync_answers_dropped_total",
        "Answers to live resync NOTIFYs that were dropped, by reason: wrong_source (from another address than the NOTIFY went to: a forgery, or a proxy answering from another of its addresses, which leaves every resync unanswered).",
    ),
    (
        "dialtone_resync_failed_total",
        "Resyncs that ended without a 2xx, by reason: the proxy's timeout, send, no_address (also direct mode's history unavailable); a phone's phone_timeout (in direct mode, or through a proxy that answers an OPTIONS of its own), in direct mode phone_send, no_fetch (no served fetch within a day inside the allowed networks); rejected, changed, interrupted, dropped (still queued at shutdown, for queued resyncs are not kept across a restart).",
    ),
    (
        "dialtone_resync_proxy_unresolved_total",
        "Lookups of the SIP proxy's name that failed (the last good address, if any, is kept).",
    ),
    (
        "dialtone_resync_queued_total",
        "Resyncs queued by the admin API.",
    ),
    (
        "dialtone_resync_refetched_total",
        "Resynced phones seen fetching their own configuration after the NOTIFY.",
    ),
    (
        "dialtone_resync_refused_total",
        "Resyncs refused because the queue was full, by reason (queue, tenant_queue).",
    ),
    (
        "dialtone_resync_sent_total",
        "Resync NOTIFYs sent (first transmissions).",
    ),
    (
        "dialtone_store_large_reads_total",
        "PostgreSQL reads of phones and lines on two connections at once (the mirror's load; a large import's comparison), by read (mirror_load, import) and connections: two_connections, or one, slower, because another transaction waited to lock a table exclusively (lock_queued, often a migration) or no second connection came in time (no_connection: the pool was held by other work, or the connection failed).",
    ),
    (
        "dialtone_store_connections_closed_total",
        "PostgreSQL pool connections closed instead of given back to the pool: the store call on them was cut off by a time limit (the watcher's catch_up_limit, an admin request's ceiling, the resync refetch watch's 5 s, a background writer's or the pruner's limit) or its connection failed. A connection cut off on a silent socket would otherwise keep its slot until TCP gave up; a steady rise means queries cut off, often a network path or a server that stopped answering.",
    ),
    (
        "dialtone_task_panics_total",
        "Supervised background tasks that panicked, by task.",
    ),
    (
        "dialtone_task_restarts_total",
        "Supervised background tasks restarted, by task.",
    ),
    (
        "dialtone_task_unreachable_total",
        "Background task stops because the database was unreachable, by task; restarted, not counted toward degraded.",
    ),
    (
        "dialtone_tftp_refused_total",
        "TFTP requests refused, by reason (busy, per_source, unacked: dropped unanswered, write, malformed; error_limited: an error reply dropped past its source's burst of 64 and 20 a second; reads_busy: a static file's transfer refused while 64 file reads, or 16 of its source's, were running).",
    ),
    (
        "dialtone_tftp_stalled_total",
        "TFTP transfers ended with an error after no acknowledgement within the retries or provisioning.tftp_stall_s.",
    ),
    (
        "dialtone_tftp_too_slow_total",
        "TFTP transfers ended with an error because their client acknowledged under provisioning.tftp_min_rate on average, past provisioning.tftp_min_rate_slack_s behind.",
    ),
    (
        "dialtone_tftp_transfer_panics_total",
        "TFTP transfers that panicked.",
    ),
    (
        "dialtone_tftp_client_errors_total",
        "ERROR packets TFTP clients sent to end their transfers, by code: the TFTP error code 0 to 8 (3: disk full or allocation exceeded, what a phone refusing a file too large for it sends; 8: option negotiation refused), other for any larger one.",
    ),
    (
        "dialtone_http_source_connections_shed_total",
        "HTTP connections refused because their source (an IPv4 address, an IPv6 /64) held its listener's per-source cap (provisioning.http_max_per_source on the provisioning listeners) open already: answered 503 over plain HTTP, closed without a handshake over HTTPS. By listener, as dialtone_http_connections_shed_total.",
    ),
    (
        "dialtone_tftp_evicted_total",
        "TFTP transfers no ACK had answered that gave their slot to a new request because every slot was taken (a flood from forged sources, most likely).",
    ),
    (
        "dialtone_tftp_transfer_failed_total",
        "TFTP transfers that could not start or read their file (answered with an error packet).",
    ),
    (
        "dialtone_static_open_failed_total",
        "Indexed static files that would not open for an HTTP(S) fetch, by reason: not_found (gone since they were indexed, answered 404), other (permissions, an I/O error: answered 500).",
    ),
    (
        "dialtone_http_static_reads_busy_total",
        "HTTP(S) downloads of static files answered 503 because the reads they share with TFTP stayed all running for the 2 s a download waits to open its file, by share: all (64 reads in flight), source (16 of the client's address or IPv6 /64). A steady rise means a slow or hung disk or mount under static_dir.",
    ),
    (
        "dialtone_http_static_read_timeouts_total",
        "HTTP(S) downloads of static files given up because an open or read of the file took longer than 10 s (a hung disk or network mount), by at: open (answered 503), body (the body cut short).",
    ),
    (
        "dialtone_directory_local_index_builds_total",
        "Local directory indexes made, by kind: full (every number normalized) or update (from the tenant's last index, only changed entries normalized). One per tenant at a time, off the async workers.",
    ),
    (
        "dialtone_directory_mirror_sync_errors_total",
        "Failed syncs of mirrored LDAP sources, by kind (full, incremental).",
    ),
    (
        "dialtone_directory_ldap_results_dropped_total",
        "Search results an LDAP server sent past what a lookup reads (its size limit plus one, 256 KiB), dropped by the node.",
    ),
];

/// Gauges: (name, help).
pub const GAUGES: &[(&str, &str)] = &[
    (
        "dialtone_clock_offset_seconds",
        "This node's clock minus the PostgreSQL server's, in seconds, measured at each prune pass (positive: this node is ahead); absent on SQLite. A WARN is logged past 60 s. Prune cutoffs use the database's clock; Digest nonces, provisioning history and token expiry use this one.",
    ),
    (
        "dialtone_directory_mirror_jobs_waiting",
        "Mirrored LDAP sources' jobs (normalizing, merging, indexing, files) waiting for one of lookup.mirror_threads.",
    ),
    (
        "dialtone_degraded",
        "1 while any supervised task restarts too often (which ones: /readyz's degraded list).",
    ),
    ("dialtone_lookup_inflight", "Caller-name lookups in flight."),
    (
        "dialtone_tls_certificate_expiry_timestamp_seconds",
        "When the HTTPS listener's certificate expires (Unix seconds), as last read at start or on SIGHUP; 0 if its date could not be read. Absent without HTTPS.",
    ),
    (
        "dialtone_tls_certificate_not_before_timestamp_seconds",
        "When the HTTPS listener's certificate becomes valid (its notBefore, Unix seconds), as last read at start or on SIGHUP; above time() while phones that check dates refuse it as not valid yet (logged at ERROR); 0 if its date could not be read. Absent without HTTPS.",
    ),
    (
        "dialtone_mirror_lag_seconds",
        "Seconds since the mirror last caught up with the database.",
    ),
    ("dialtone_mirror_loaded", "1 once the mirror holds data."),
    ("dialtone_mirror_rows", "Rows in the mirror, by table."),
    (
        "dialtone_mirror_stale_seconds",
        "Seconds the mirror has been unable to reach the database (0 when fresh).",
    ),
    ("dialtone_mirror_version", "The mirror state's version."),
    (
        "dialtone_provisioning_banned_sources",
        "Sources banned right now.",
    ),
    ("dialtone_render_cache_files", "Files in the render cache."),
    (
        "dialtone_resync_inflight",
        "Resync NOTIFYs awaiting a final answer.",
    ),
    ("dialtone_resync_waiting", "Resyncs queued, not sent yet."),
    ("dialtone_tftp_active_transfers", "TFTP transfers running."),
    (
        "dialtone_directory_mirror_entries",
        "Entries in the in-memory indexes of all mirrored LDAP sources on this node.",
    ),
    (
        "dialtone_directory_mirror_sources_behind",
        "Mirrored LDAP sources on this node whose last sync failed, or whose data was last synced longer ago than twice their sync_interval_s (spaced by their last full sync's duration): lookups still answer from the old data. A count, read at scrape time; `dialtone lookup` or the admin API's source status names them.",
    ),
    (
        "dialtone_ready",
        "1 while /readyz answers ready (the mirror holds data and is not stale past mirror.max_staleness_s), 0 otherwise; read at scrape time by the same code.",
    ),
    (
        "dialtone_config_last_reload_successful",
        "1 if the last configuration load applied in full (the start, or the last SIGHUP reload), 0 if the last SIGHUP reload failed in any part (an invalid config, a certificate, templates or static files that would not load, the log file not reopened, a secrets key (secrets.key, secrets.key_file or the key file's content) that cannot be read or is not the running one and not one the database's secrets are sealed with): then the next start would fail too.",
    ),
    (
        "dialtone_config_last_reload_timestamp_seconds",
        "When the configuration was last loaded, at start or by SIGHUP, whether or not it succeeded (Unix seconds).",
    ),
];

/// Histograms, all in seconds: (name, help).
pub const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "dialtone_lookup_duration_seconds",
        "Caller-name lookup time, all sources together.",
    ),
    (
        "dialtone_lookup_source_duration_seconds",
        "Time of one request to a lookup source, by kind.",
    ),
    (
        "dialtone_render_pool_wait_seconds",
        "Time a render waited for a render-pool slot.",
    ),
    (
        "dialtone_list_walk_wait_seconds",
        "Time a tenant's admin list waited for a slot on the list-walk lane (half the render threads, one walk per tenant at a time).",
    ),
    (
        "dialtone_transfer_duration_seconds",
        "Provisioning transfer time, by protocol and outcome (buckets from 1 ms to an hour: a firmware image over TFTP on a slow link).",
    ),
    (
        "dialtone_directory_mirror_sync_seconds",
        "Time of one sync of a mirrored LDAP source, by kind (full, incremental); buckets from 10 ms to 30 minutes (a full read is cut off at 15).",
    ),
];

/// Series registered at 0 when the recorder is installed: one that first
/// appears at its first increment hides that increment from `increase()`,
/// so an alert on a rare event (a panic, a dropped history record, the
/// first refusals) would stay silent. Labeled series are listed where the
/// label values are a fixed set.
pub const START_AT_ZERO: &[(&str, &[(&str, &str)])] = &[
    ("dialtone_lookup_rate_limited_total", &[]),
    (
        "dialtone_log_lines_dropped_total",
        &[("reason", "queue_full")],
    ),
    (
        "dialtone_log_lines_dropped_total",
        &[("reason", "write_failed")],
    ),
    (
        "dialtone_http_connections_shed_total",
        &[("listener", "api")],
    ),
    (
        "dialtone_http_connections_shed_total",
        &[("listener", "provisioning")],
    ),
    (
        "dialtone_http_connections_shed_total",
        &[("listener", "provisioning_tls")],
    ),
    (
        "dialtone_http_connections_shed_total",
        &[("listener", "monitoring")],
    ),
    ("dialtone_http_idle_evicted_total", &[("listener", "api")]),
    (
        "dialtone_http_idle_evicted_total",
        &[("listener", "provisioning")],
    ),
    (
        "dialtone_http_idle_evicted_total",
        &[("listener", "provisioning_tls")],
    ),
    (
        "dialtone_http_idle_evicted_total",
        &[("listener", "monitoring")],
    ),
    (
        "dialtone_http_slow_readers_evicted_total",
        &[("listener", "api")],
    ),
    (
        "dialtone_http_slow_readers_evicted_total",
        &[("listener", "provisioning")],
    ),
    (
        "dialtone_http_slow_readers_evicted_total",
        &[("listener", "provisioning_tls")],
    ),
    (
        "dialtone_http_slow_readers_evicted_total",
        &[("listener", "monitoring")],
    ),
    (
        "dialtone_http_source_connections_shed_total",
        &[("listener", "api")],
    ),
    (
        "dialtone_http_source_connections_shed_total",
        &[("listener", "provisioning")],
    ),
    (
        "dialtone_http_source_connections_shed_total",
        &[("listener", "provisioning_tls")],
    ),
    (
        "dialtone_http_source_connections_shed_total",
        &[("listener", "monitoring")],
    ),
    (
        "dialtone_tls_handshake_failures_total",
        &[("reason", "protocol_version")],
    ),
    (
        "dialtone_tls_handshake_failures_total",
        &[("reason", "no_shared_cipher")],
    ),
    (
        "dialtone_tls_handshake_failures_total",
        &[("reason", "certificate")],
    ),
    (
        "dialtone_tls_handshake_failures_total",
        &[("reason", "timeout")],
    ),
    (
        "dialtone_tls_handshake_failures_total",
        &[("reason", "closed")],
    ),
    (
        "dialtone_tls_handshake_failures_total",
        &[("reason", "other")],
    ),
    ("dialtone_tftp_evicted_total", &[]),
    ("dialtone_resync_proxy_unresolved_total", &[]),
    ("dialtone_lookup_reserve_loads_total", &[]),
    ("dialtone_lookup_cache_share_full_total", &[]),
    ("dialtone_lookup_shed_total", &[("reason", "tenant_share")]),
    ("dialtone_lookup_shed_total", &[("reason", "full")]),
    ("dialtone_provisioning_bans_total", &[]),
    ("dialtone_provisioning_misdirected_total", &[]),
    ("dialtone_render_cache_stale_total", &[]),
    (
        "dialtone_render_pool_refused_total",
        &[("reason", "tenant_share")],
    ),
    ("dialtone_render_pool_refused_total", &[("reason", "full")]),
    ("dialtone_render_pool_timeouts_total", &[]),
    (
        "dialtone_list_walks_refused_total",
        &[("reason", "tenant_share")],
    ),
    ("dialtone_list_walks_refused_total", &[("reason", "full")]),
    ("dialtone_list_walk_timeouts_total", &[]),
    ("dialtone_request_panics_total", &[]),
    ("dialtone_tftp_stalled_total", &[]),
    ("dialtone_tftp_too_slow_total", &[]),
    ("dialtone_tftp_transfer_panics_total", &[]),
    ("dialtone_tftp_transfer_failed_total", &[]),
    (
        "dialtone_static_open_failed_total",
        &[("reason", "not_found")],
    ),
    ("dialtone_static_open_failed_total", &[("reason", "other")]),
    ("dialtone_http_static_reads_busy_total", &[("share", "all")]),
    (
        "dialtone_http_static_reads_busy_total",
        &[("share", "source")],
    ),
    (
        "dialtone_http_static_read_timeouts_total",
        &[("at", "open")],
    ),
    (
        "dialtone_http_static_read_timeouts_total",
        &[("at", "body")],
    ),
    ("dialtone_tftp_client_errors_total", &[("code", "0")]),
    ("dialtone_tftp_client_errors_total", &[("code", "1")]),
    ("dialtone_tftp_client_errors_total", &[("code", "2")]),
    ("dialtone_tftp_client_errors_total", &[("code", "3")]),
    ("dialtone_tftp_client_errors_total", &[("code", "4")]),
    ("dialtone_tftp_client_errors_total", &[("code", "5")]),
    ("dialtone_tftp_client_errors_total", &[("code", "6")]),
    ("dialtone_tftp_client_errors_total", &[("code", "7")]),
    ("dialtone_tftp_client_errors_total", &[("code", "8")]),
    ("dialtone_tftp_client_errors_total", &[("code", "other")]),
    (
        "dialtone_history_dropped_total",
        &[("reason", "queue_full")],
    ),
    (
        "dialtone_history_dropped_total",
        &[("reason", "tenant_share")],
    ),
    ("dialtone_history_dropped_total", &[("reason", "shutdown")]),
    (
        "dialtone_history_dropped_total",
        &[("reason", "write_failed")],
    ),
    ("dialtone_history_dropped_total", &[("reason", "panic")]),
    (
        "dialtone_history_dropped_total",
        &[("reason", "phone_rate")],
    ),
    (
        "dialtone_unclaimed_dropped_total",
        &[("reason", "queue_full")],
    ),
    (
        "dialtone_unclaimed_dropped_total",
        &[("reason", "tenant_share")],
    ),
    (
        "dialtone_unclaimed_dropped_total",
        &[("reason", "shutdown")],
    ),
    (
        "dialtone_unclaimed_dropped_total",
        &[("reason", "write_failed")],
    ),
    ("dialtone_unclaimed_dropped_total", &[("reason", "panic")]),
    ("dialtone_admin_database_given_up_total", &[]),
    ("dialtone_resync_refetch_reads_timed_out_total", &[]),
    (
        "dialtone_admin_database_refused_total",
        &[("scope", "tenant")],
    ),
    (
        "dialtone_admin_database_refused_total",
        &[("scope", "all_tenants")],
    ),
    (
        "dialtone_admin_database_refused_total",
        &[("scope", "others_waiting")],
    ),
    (
        "dialtone_admin_database_refused_total",
        &[("scope", "bodies")],
    ),
    (
        "dialtone_admin_database_refused_total",
        &[("scope", "checks")],
    ),
    (
        "dialtone_admin_database_refused_total",
        &[("scope", "write_rate")],
    ),
    (
        "dialtone_store_large_reads_total",
        &[("read", "mirror_load"), ("connections", "lock_queued")],
    ),
    (
        "dialtone_store_large_reads_total",
        &[("read", "mirror_load"), ("connections", "no_connection")],
    ),
    (
        "dialtone_store_large_reads_total",
        &[("read", "import"), ("connections", "lock_queued")],
    ),
    (
        "dialtone_store_large_reads_total",
        &[("read", "import"), ("connections", "no_connection")],
    ),
    ("dialtone_store_connections_closed_total", &[]),
    (
        "dialtone_lookup_resolutions_refused_total",
        &[("limit", "tenant")],
    ),
    (
        "dialtone_lookup_resolutions_refused_total",
        &[("limit", "node")],
    ),
    ("dialtone_tftp_refused_total", &[("reason", "busy")]),
    ("dialtone_tftp_refused_total", &[("reason", "per_source")]),
    ("dialtone_tftp_refused_total", &[("reason", "unacked")]),
    ("dialtone_tftp_refused_total", &[("reason", "write")]),
    ("dialtone_tftp_refused_total", &[("reason", "reads_busy")]),
    ("dialtone_tftp_read_timeouts_total", &[]),
    ("dialtone_tftp_refused_total", &[("reason", "malformed")]),
    (
        "dialtone_tftp_refused_total",
        &[("reason", "error_limited")],
    ),
    ("dialtone_resync_failed_total", &[("reason", "timeout")]),
    ("dialtone_resync_failed_total", &[("reason", "send")]),
    ("dialtone_resync_failed_total", &[("reason", "no_address")]),
    (
        "dialtone_resync_failed_total",
        &[("reason", "phone_timeout")],
    ),
    ("dialtone_resync_failed_total", &[("reason", "phone_send")]),
    ("dialtone_resync_failed_total", &[("reason", "no_fetch")]),
    ("dialtone_resync_failed_total", &[("reason", "dropped")]),
    (
        "dialtone_resync_answers_dropped_total",
        &[("reason", "wrong_source")],
    ),
    (
        "dialtone_provisioning_refused_total",
        &[("reason", "another_tenants_network")],
    ),
];

/// Gauges registered at 0 when the recorder is installed: those set only
/// on a path a node may never take (lookups that all answer from memory
/// never spawn a load), which a dashboard would otherwise show as no data.
pub const GAUGES_AT_ZERO: &[&str] = &[
    "dialtone_lookup_inflight",
    "dialtone_tftp_active_transfers",
    "dialtone_directory_mirror_jobs_waiting",
];

/// Registers every description with the installed recorder, and the
/// series that start at zero.
pub fn describe() {
    for (name, help) in COUNTERS {
        describe_counter!(*name, *help);
    }
    for (name, help) in GAUGES {
        describe_gauge!(*name, *help);
    }
    for (name, help) in HISTOGRAMS {
        describe_histogram!(*name, Unit::Seconds, *help);
    }
    for (name, labels) in START_AT_ZERO {
        let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::new(*k, *v)).collect();
        metrics::counter!(*name, labels).increment(0);
    }
    for name in GAUGES_AT_ZERO {
        metrics::gauge!(*name).set(0.0);
    }
    for task in dialtone_sync::watcher::BACKGROUND_TASKS {
        metrics::counter!(dialtone_sync::watcher::BACKGROUND_FAILURES, "task" => *task)
            .increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_that_start_at_zero_are_described_counters() {
        for (name, _) in START_AT_ZERO {
            assert!(COUNTERS.iter().any(|(n, _)| n == name), "{name}");
        }
        for name in GAUGES_AT_ZERO {
            assert!(GAUGES.iter().any(|(n, _)| n == name), "{name}");
        }
    }

    /// A counter with a fixed label set starts at zero for each value, or
    /// `increase()` misses the first refusals of the one not listed.
    #[test]
    fn every_listener_and_render_refusal_starts_at_zero() {
        let starts = |name: &str, label: &str, value: &str| {
            START_AT_ZERO
                .iter()
                .any(|(n, labels)| *n == name && *labels == [(label, value)])
        };
        let starts_unlabeled = |name: &str| {
            START_AT_ZERO
                .iter()
                .any(|(n, labels)| *n == name && labels.is_empty())
        };
        for name in [
            "dialtone_http_connections_shed_total",
            "dialtone_http_source_connections_shed_total",
            "dialtone_http_idle_evicted_total",
            "dialtone_http_slow_readers_evicted_total",
        ] {
            for listener in crate::http_server::Listener::ALL {
                assert!(
                    starts(name, "listener", listener.label()),
                    "{name} {listener:?}"
                );
            }
            // No unlabeled series beside the labeled ones.
            assert!(!START_AT_ZERO
                .iter()
                .any(|(n, l)| *n == name && l.is_empty()));
        }
        for failure in crate::http_server::HandshakeFailure::ALL {
            assert!(
                starts(
                    "dialtone_tls_handshake_failures_total",
                    "reason",
                    failure.label()
                ),
                "{failure:?}"
            );
        }
        for lane in [dialtone_tftp::pool::RENDERS, dialtone_tftp::pool::WALKS] {
            for reason in dialtone_tftp::pool::REFUSAL_REASONS {
                assert!(
                    starts(lane.refused_total, "reason", reason),
                    "{} {reason}",
                    lane.refused_total
                );
            }
            assert!(starts_unlabeled(lane.timeouts_total), "{lane:?}");
            assert!(
                HISTOGRAMS.iter().any(|(n, _)| *n == lane.wait_seconds),
                "{lane:?}"
            );
        }
    }

    #[test]
    fn every_drop_reason_of_the_writers_starts_at_zero() {
        for name in [
            "dialtone_history_dropped_total",
            "dialtone_unclaimed_dropped_total",
        ] {
            for reason in dialtone_sync::DROP_REASONS {
                assert!(
                    START_AT_ZERO
                        .iter()
                        .any(|(n, labels)| *n == name && *labels == [("reason", reason)]),
                    "{name} {reason}"
                );
            }
        }
    }
}
