"""The PostgreSQL backend's SQL for hand-offs and claims: acknowledging a release
(``rules.destination``), evicting an overdue one (``rules.overdue``), claiming,
settling (complete, release) and reaping the claims of ended incarnations
(``rules.purgeable``).

Templates, macros, lock order and the rules each statement mirrors are
described in ``queries.py``, which renders these statements with its own.
"""

from __future__ import annotations

# -- hand-off -----------------------------------------------------------------

# A finished release passes the token to its destination's live incarnation,
# or leaves it unowned (the row-valued subquery yields NULLs when none).
_HAND_OVER = """(node, incarnation) = (SELECT l.name, l.incarnation FROM live l
        WHERE l.name = t.pending_to),
    epoch = t.epoch + 1, pending_to = NULL, pending_deadline = NULL"""

ACK = (
    """WITH live AS (SELECT n.name, n.incarnation FROM {node} n
    WHERE n.site = %(site)s AND @LIVE:n@)
UPDATE {token} t SET """
    + _HAND_OVER
    + """
FROM unnest(%(tokens)s::int[], %(epochs)s::int8[]) AS r(token_id, epoch)
WHERE t.site = %(site)s AND t.token_id = r.token_id AND t.epoch = r.epoch
  AND t.node = %(name)s AND t.incarnation = %(inc)s AND t.pending_deadline IS NOT NULL
RETURNING t.token_id"""
)

# The eviction and its counter bump in one statement, the last before COMMIT:
# the evicted nodes' rows are locked (in name order) only for that statement.
EVICT = """WITH o AS (
    SELECT n.name, n.incarnation FROM {node} n
    WHERE n.site = %(site)s AND n.state IN ('active', 'leaving')
      AND (n.name, n.incarnation) IN (SELECT t.node, t.incarnation FROM {token} t
        WHERE t.site = %(site)s AND t.pending_deadline IS NOT NULL
          AND t.pending_deadline <= clock_timestamp())
    ORDER BY n.name COLLATE "C" FOR UPDATE OF n),
e AS (
    UPDATE {node} n SET state = 'evicted' FROM o
    WHERE n.site = %(site)s AND n.name = o.name AND n.incarnation = o.incarnation
      AND n.state IN ('active', 'leaving')
    RETURNING n.name),
b AS (
    UPDATE {site} SET change_counter = change_counter + 1
    WHERE site = %(site)s AND EXISTS (SELECT 1 FROM e) RETURNING change_counter)
SELECT array(SELECT name FROM e), (SELECT pg_notify(%(channel)s, %(payload)s) FROM b)"""

# -- claims and completion ----------------------------------------------------

# One round trip.  FOR SHARE on the token rows makes the fence hold at commit:
# a plan or acknowledgement that moves the token (an UPDATE of the row) either
# committed before (the row is re-read and no longer matches) or waits for this
# statement to commit (and then releases or keeps the claim as its rules say).
# Only keys with no audit row in committed state are inserted (``fresh``): an
# INSERT ... ON CONFLICT on a key whose row an open transaction is updating
# (a completion in a user's transaction) would wait for that transaction.
CLAIM = """WITH s AS (SELECT total_tokens FROM {site} WHERE site = %(site)s),
req AS (
    SELECT * FROM unnest(%(keys)s::text[], %(tokens)s::int[], %(epochs)s::int8[])
        WITH ORDINALITY AS r(task_key, token_id, epoch, ord)),
bad AS (SELECT 1 FROM req, s WHERE req.token_id >= s.total_tokens),
ok AS (
    SELECT t.token_id, t.epoch FROM {token} t
    WHERE t.site = %(site)s AND t.token_id = ANY(%(tokens)s::int[]) AND t.node = %(name)s
      AND t.incarnation = %(inc)s AND t.pending_deadline IS NULL
      AND NOT EXISTS (SELECT 1 FROM bad)
    FOR SHARE),
pick AS (
    SELECT DISTINCT ON (r.task_key) r.task_key, r.token_id, r.epoch
    FROM req r JOIN ok ON ok.token_id = r.token_id AND ok.epoch = r.epoch
    ORDER BY r.task_key, r.ord),
fresh AS (
    SELECT p.* FROM pick p WHERE NOT EXISTS (SELECT 1 FROM {audit} a
        WHERE a.site = %(site)s AND a.date = %(date)s AND a.task_key = p.task_key)),
ins AS (
    INSERT INTO {audit} (site, date, task_key, node, incarnation, token_id, epoch, status,
        claimed_at)
    SELECT %(site)s, %(date)s, p.task_key, %(name)s, %(inc)s, p.token_id, p.epoch, 'claimed',
        clock_timestamp() FROM fresh p
    ON CONFLICT (site, date, task_key) DO NOTHING RETURNING task_key),
-- A retry whose first answer was lost finds its own open claim: claimed, not stranded.
mine AS (
    SELECT a.task_key FROM {audit} a JOIN pick p ON p.task_key = a.task_key
    WHERE a.site = %(site)s AND a.date = %(date)s AND a.incarnation = %(inc)s
      AND a.status = 'claimed')
SELECT (SELECT total_tokens FROM s), (SELECT count(*) FROM bad),
    array(SELECT task_key FROM ins UNION SELECT task_key FROM mine)"""


# COMPLETE and RELEASE differ only in what they do to the incarnation's open
# claims among ``keys``: mark them done, or delete them.
def _settle(action: str) -> str:
    return f"""WITH s AS (SELECT 1 FROM {{site}} WHERE site = %(site)s),
u AS (
    {action}
    WHERE site = %(site)s AND date = %(date)s AND task_key = ANY(%(keys)s::text[])
      AND incarnation = %(inc)s AND status = 'claimed'
    RETURNING task_key)
SELECT (SELECT count(*) FROM s), array(SELECT task_key FROM u)"""


COMPLETE = _settle(
    "UPDATE {audit} SET status = 'done', completed_at = clock_timestamp(),"
    " cost = %(cost)s::double precision"
)
RELEASE = _settle("DELETE FROM {audit}")

# One autocommit statement, without the site lock.  ``killed``: claimers whose
# lease ran out are marked dead as in MARK_EXPIRED_HOLDERS (each node row is locked for
# this statement only).  The sub-statements of one CTE share one snapshot, in
# which ``killed``'s own writes are invisible: ``gone`` takes the ones it just
# killed from its RETURNING, and judges the others with KEPT (a row that is
# active, leaving or evicted and was not killed keeps its claims this time).
# SKIP LOCKED: a claim row locked by its worker's open transaction (a completion
# in the user's own transaction, perhaps paused) is left for a later reap
# instead of stalling the whole site behind it; it commits done or stays
# claimed.  ``purged``: node rows that are not live, whose lease ended more than
# ``retention`` seconds ago, whose fence is over and that no token row or open
# claim names (a dead row and no row mean the same to every judgement here).
REAP = """WITH s AS (SELECT 1 FROM {site} WHERE site = %(site)s),
h AS (
    SELECT DISTINCT a.node, a.incarnation FROM {audit} a
    WHERE a.site = %(site)s AND a.status = 'claimed'),
l AS (
    SELECT c.name, c.incarnation FROM {node} c
    WHERE c.site = %(site)s AND c.state <> 'dead' AND @EXP:c@ <= clock_timestamp()
      AND (c.name, c.incarnation) IN (SELECT h.node, h.incarnation FROM h)
    ORDER BY c.name COLLATE "C" FOR UPDATE OF c),
killed AS (
    UPDATE {node} n SET state = 'dead' FROM l
    WHERE n.site = %(site)s AND n.name = l.name AND n.incarnation = l.incarnation
      AND n.state <> 'dead' AND @EXP:n@ <= clock_timestamp()
    RETURNING n.incarnation),
gone AS (
    SELECT incarnation FROM killed
    UNION SELECT h.incarnation FROM h WHERE NOT @KEPT:h@),
d AS (
    DELETE FROM {audit} WHERE ctid = ANY(ARRAY(
        SELECT a.ctid FROM {audit} a
        WHERE a.site = %(site)s AND a.status = 'claimed'
          AND a.incarnation IN (SELECT incarnation FROM gone)
        FOR UPDATE OF a SKIP LOCKED))
    RETURNING 1),
purged AS (
    DELETE FROM {node} n
    WHERE n.site = %(site)s AND NOT @LIVE:n@
      AND @EXP:n@ + %(retention)s * interval '1 second' < clock_timestamp()
      AND (n.fence_until IS NULL OR n.fence_until <= clock_timestamp())
      AND NOT EXISTS (SELECT 1 FROM {token} t WHERE t.site = n.site AND t.node = n.name)
      AND NOT EXISTS (SELECT 1 FROM h WHERE h.node = n.name)
    RETURNING 1)
SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM d), (SELECT count(*) FROM purged),
    (SELECT count(*) FROM {audit} a WHERE a.site = %(site)s AND a.status = 'claimed'
       AND a.incarnation IN (SELECT incarnation FROM gone))"""
