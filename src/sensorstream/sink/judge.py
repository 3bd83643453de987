"""Judging readings: the anomaly rules and each sensor's alert state, inside the batch's merge.

A reading is judged against its own sensor's recent behaviour, kept in ``sensor_state`` (one row
per sensor), not against past windows: a window needs several readings to have a spread, so a
sensor reporting once a minute (or once an hour) would never be judged. The state is updated with
the batch in the same transaction as everything else, so it is exact under replay and crashes.

The baseline is an exponentially weighted mean and variance over about the sensor's last
``ANOMALY_BASELINE_READINGS`` *normal* readings (weights per reading, not per second, so it follows
a sensor whatever its rate). Flagged readings do not teach it, so a spike neither drags the mean
nor widens sigma. Rules, in order of precedence:

* ``threshold``: outside the type's plausible operating range (every reading, late ones too).
* ``zscore``: ``|value - mean| / sigma > ANOMALY_ZSCORE``, once the baseline has
  ``ANOMALY_WARMUP`` readings; sigma is at least the type's ``ANOMALY_SIGMA_FLOOR``.
* ``stuck``: the same value ``ANOMALY_STUCK_READINGS`` times in a row.
* ``drift``: a two-sided CUSUM of the standardised readings (slack 0.5 sigma) passes
  ``ANOMALY_DRIFT_LIMIT``: a shift too small for the z-score that keeps going one way.

Point anomalies (threshold, zscore) give one ``anomalies`` row per reading. Conditions (stuck,
drift) give one row where they start (the sensor's last reading in the batch that proved them);
the sensor's state says how long they last. A sensor is in state ``anomaly`` from its first
flagged reading until ``ANOMALY_CLEAR_READINGS`` normal readings follow; after
``ANOMALY_RELEARN_READINGS`` zscore/drift readings without a normal batch between them its level
has changed for good, and the baseline is learnt again from there (``relearned_at``).

Granularity, and why: each reading is judged against the baseline as it stood before the batch
(a batch is a second or so of data), and the conditions advance once per sensor and batch: the
CUSUM adds the batch's evidence, a run of one value grows by a batch that holds only that value.
So the whole judgement is two scans of the batch and one aggregate per sensor, with no sort:
~20 ms for a 20 K-reading batch, where a reading-by-reading recursion cost ~150 ms (window
functions or a Python loop). A replayed batch has the same boundaries, so it is judged the same.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from sensorstream.config import Settings

# CUSUM slack in sigmas: the smallest sustained shift the drift rule is tuned to find is twice this.
DRIFT_SLACK = 0.5

# Each reading with its sensor's state before the batch, and its point verdict.
_LOOK = """
CREATE OR REPLACE TEMP TABLE looked AS
WITH j AS (
    SELECT s.event_id, s.sensor_id, s.sensor_type, s.site, s.event_time, s.value, s.is_late,
           st.baseline_mean AS mu,
           greatest(sqrt(st.baseline_variance), coalesce(f.sigma, $floor_any)) AS sigma,
           CASE WHEN NOT s.is_late AND coalesce(st.baseline_readings, 0) >= $warmup
                THEN (s.value - st.baseline_mean)
                     / greatest(sqrt(st.baseline_variance), coalesce(f.sigma, $floor_any)) END AS z,
           CASE WHEN s.value > t.high THEN (s.value - t.high) / nullif(t.high - t.low, 0)
                WHEN s.value < t.low THEN (t.low - s.value) / nullif(t.high - t.low, 0) END AS over,
           t.low AS t_low, t.high AS t_high,
           $drift > 0 AND greatest(st.drift_high, st.drift_low) > $drift AS drifting
    FROM stage s
    LEFT JOIN sensor_state st ON st.sensor_id = s.sensor_id
    LEFT JOIN floors f ON f.sensor_type = s.sensor_type
    LEFT JOIN thresholds t ON t.sensor_type = s.sensor_type
)
SELECT *,
       CASE WHEN over IS NOT NULL THEN 'threshold'
            WHEN is_late OR z IS NULL THEN NULL
            -- a drift under way owns its readings, however far they go
            WHEN abs(z) > $z AND drifting THEN 'drift'
            WHEN abs(z) > $z THEN 'zscore' END AS point,
       CASE WHEN over IS NOT NULL THEN over ELSE abs(z) END AS score,
       CASE WHEN over IS NOT NULL OR mu IS NULL THEN t_low ELSE mu - $z * sigma END AS expected_low,
       CASE WHEN over IS NOT NULL OR mu IS NULL THEN t_high ELSE mu + $z * sigma END AS expected_high
FROM j
"""

# Per sensor with on-time readings: the batch's part, the state before it, and the conditions after it.
_PER_SENSOR = """
CREATE OR REPLACE TEMP TABLE per_sensor AS
WITH a AS (
    SELECT sensor_id, max(sensor_type) AS sensor_type, max(site) AS site, count(*) AS n,
           min(value) = max(value) AS one_value,
           arg_max({'event_id': event_id, 'value': value, 'event_time': event_time,
                    'sensor_type': sensor_type}, (event_time, event_id)) AS last,
           -- a spike is the z-score's, no evidence of a drift
           coalesce(sum(z - $slack) FILTER (WHERE abs(z) <= $z), 0) AS d_high,
           coalesce(sum(-z - $slack) FILTER (WHERE abs(z) <= $z), 0) AS d_low,
           count(*) FILTER (WHERE point IN ('zscore', 'drift')) AS off_baseline,
           count(*) FILTER (WHERE point IS NOT NULL) AS points,
           arg_max({'rule': point, 'value': value, 'score': score, 'low': expected_low,
                    'high': expected_high, 'at': event_time}, (event_time, event_id))
               FILTER (WHERE point IS NOT NULL) AS last_point,
           min(event_time) FILTER (WHERE point IS NOT NULL) AS first_point_time,
           count(*) FILTER (WHERE point IS NULL) AS kk,
           avg(value) FILTER (WHERE point IS NULL) AS m_b,
           var_pop(value) FILTER (WHERE point IS NULL) AS v_b,
           any_value(mu) AS mu, any_value(sigma) AS sigma
    FROM looked WHERE NOT is_late
    GROUP BY sensor_id
), b AS (
    SELECT a.*, st.state AS state0, st.since AS since0, st.rule AS rule0, st.rule_value AS value0,
           st.rule_score AS score0, st.expected_low AS low0, st.expected_high AS high0,
           st.last_anomaly_time AS last_anomaly0, st.relearned_at AS relearned0,
           coalesce(st.baseline_readings, 0) AS n0, st.baseline_mean AS mu0, st.baseline_variance AS var0,
           coalesce(st.repeats, 0) AS run0, coalesce(st.normal_run, 0) AS normal0,
           coalesce(st.flagged_run, 0) AS flagged0,
           $drift > 0 AND greatest(st.drift_high, st.drift_low) > $drift AS drifting0,
           greatest(0, coalesce(st.drift_high, 0) + a.d_high) AS drift_high,
           greatest(0, coalesce(st.drift_low, 0) + a.d_low) AS drift_low,
           -- a run of one value grows by a batch holding only that value, else starts again
           CASE WHEN NOT a.one_value THEN 1
                WHEN a.last.value = st.last_value THEN coalesce(st.repeats, 0) + a.n ELSE a.n END AS run
    FROM a LEFT JOIN sensor_state st ON st.sensor_id = a.sensor_id
)
SELECT *,
       $stuck > 0 AND run >= $stuck AS stuck,
       $stuck > 0 AND run >= $stuck AND run0 < $stuck AS stuck_starts,
       $drift > 0 AND greatest(drift_high, drift_low) > $drift AS drifting,
       $drift > 0 AND greatest(drift_high, drift_low) > $drift AND NOT coalesce(drifting0, false) AS drift_starts
FROM b
"""

_RECORD = """
INSERT INTO anomalies
SELECT event_id, sensor_id, sensor_type, event_time, value, point, score, $batch_id, now()
FROM looked WHERE point IN ('threshold', 'zscore')
UNION ALL
SELECT last.event_id, sensor_id, last.sensor_type, last.event_time, last.value, 'stuck', run, $batch_id, now()
FROM per_sensor WHERE stuck_starts
UNION ALL
SELECT last.event_id, sensor_id, last.sensor_type, last.event_time, last.value, 'drift',
       greatest(drift_high, drift_low), $batch_id, now()
FROM per_sensor WHERE drift_starts
ORDER BY 4
"""

# The new state of every sensor with on-time readings in the batch. The baseline learns from the
# batch's normal readings (none while a condition holds): k readings weigh 1 - (1 - alpha)^k
# against the old baseline (until the baseline has 1/alpha readings, a plain running mean:
# n0 / (n0 + k)), and the variance is the mixture's (both parts around the new mean), exact for
# equal weights.
_STATE = """
INSERT OR REPLACE INTO sensor_state
WITH c AS (
    SELECT *,
           stuck OR drifting AS held,
           points > 0 OR stuck OR drifting AS flagged,
           CASE WHEN stuck OR drifting THEN 0 ELSE kk END AS learn
    FROM per_sensor
), d AS (
    SELECT *,
           CASE WHEN NOT flagged THEN normal0 + n ELSE 0 END AS normal_run,
           CASE WHEN off_baseline > 0 OR drifting THEN flagged0 + greatest(off_baseline, n * drifting::INT)
                ELSE 0 END AS flagged_run,
           CASE WHEN learn = 0 THEN 1.0 ELSE least(power(1 - $alpha, learn), n0 / (n0 + learn)) END AS w
    FROM c
), e AS (
    SELECT *, flagged_run >= $relearn AS relearn,
           CASE WHEN learn = 0 THEN mu0 WHEN n0 = 0 THEN m_b ELSE w * mu0 + (1 - w) * m_b END AS mu1,
           CASE WHEN stuck THEN {'rule': 'stuck', 'value': last.value, 'score': run::DOUBLE,
                                 'low': mu - $z * sigma, 'high': mu + $z * sigma, 'at': last.event_time}
                WHEN drifting THEN {'rule': 'drift', 'value': last.value, 'score': greatest(drift_high, drift_low),
                                    'low': mu - $z * sigma, 'high': mu + $z * sigma, 'at': last.event_time}
                ELSE last_point END AS why
    FROM d
)
SELECT sensor_id, sensor_type, site,
       CASE WHEN relearn THEN 0 ELSE n0 + learn END,
       CASE WHEN NOT relearn THEN mu1 END,
       CASE WHEN relearn THEN NULL WHEN learn = 0 THEN var0 WHEN n0 = 0 THEN v_b
            ELSE w * (var0 + (mu0 - mu1) ** 2) + (1 - w) * (v_b + (m_b - mu1) ** 2) END,
       last.value, last.event_time, run,
       CASE WHEN relearn THEN 0 ELSE least(drift_high, 2 * $drift) END,
       CASE WHEN relearn THEN 0 ELSE least(drift_low, 2 * $drift) END,
       CASE WHEN relearn THEN 0 ELSE flagged_run END,
       normal_run,
       CASE WHEN NOT relearn AND (flagged OR state0 = 'anomaly') AND normal_run < $clear
            THEN 'anomaly' ELSE 'ok' END,
       coalesce(why.rule, rule0), coalesce(why.value, value0), coalesce(why.score, score0),
       CASE WHEN why IS NOT NULL THEN why.low ELSE low0 END,
       CASE WHEN why IS NOT NULL THEN why.high ELSE high0 END,
       CASE WHEN state0 = 'anomaly' THEN since0
            WHEN flagged THEN least(first_point_time, CASE WHEN held THEN last.event_time END)
            ELSE since0 END,
       CASE WHEN flagged THEN greatest(why.at, last_point.at) ELSE last_anomaly0 END,
       CASE WHEN relearn THEN last.event_time ELSE relearned0 END,
       now()
FROM e
"""


class Judge:
    """Runs the rules over the batch's staged readings on the merge's cursor."""

    def __init__(self, settings: Settings) -> None:
        thresholds = list(settings.anomaly_thresholds.items())
        self._thresholds = pa.table(
            {
                "sensor_type": [kind for kind, _ in thresholds],
                "low": pa.array([low for _, (low, _) in thresholds], pa.float64()),
                "high": pa.array([high for _, (_, high) in thresholds], pa.float64()),
            }
        )
        floors = {k: v for k, v in settings.anomaly_sigma_floor.items() if k != "*"}
        self._floors = pa.table(
            {"sensor_type": list(floors), "sigma": pa.array(list(floors.values()), pa.float64())}
        )
        s = settings
        common = {"z": s.anomaly_zscore, "drift": s.anomaly_drift_limit}
        self._look = {**common, "warmup": s.anomaly_warmup, "floor_any": s.anomaly_sigma_floor["*"]}
        self._per_sensor = {**common, "slack": DRIFT_SLACK, "stuck": s.anomaly_stuck_readings}
        self._state = {**common, "alpha": 2 / (s.anomaly_baseline_readings + 1),
                       "relearn": s.anomaly_relearn_readings, "clear": s.anomaly_clear_readings}  # fmt: skip

    def judge(self, cur: duckdb.DuckDBPyConnection, batch_id: int) -> int:
        """Judge the ``stage`` table's readings; record anomalies, update ``sensor_state``.

        Returns how many anomalies were recorded.
        """
        cur.register("thresholds", self._thresholds)
        cur.register("floors", self._floors)
        try:
            cur.execute(_LOOK, self._look)
            cur.execute(_PER_SENSOR, self._per_sensor)
            recorded = cur.execute(_RECORD, {"batch_id": batch_id}).fetchall()[0][0]
            cur.execute(_STATE, self._state)
        finally:
            cur.unregister("thresholds")
            cur.unregister("floors")
        return recorded
