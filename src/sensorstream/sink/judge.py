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
drift) give one row where they start; the sensor's state says how long they last. A sensor is in
state ``anomaly`` from its first flagged reading until ``ANOMALY_CLEAR_READINGS`` normal readings
in a row; after ``ANOMALY_RELEARN_READINGS`` zscore/drift readings in a row its level has changed
for good, and the baseline is learnt again from there (``relearned_at``).

Within a batch, readings are judged in event-time order against the baseline as it stood before
the batch (a batch is a second or so of data); the evidence of the persistent rules (repeats, the
CUSUMs) runs reading by reading, through window functions.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from sensorstream.config import Settings

# CUSUM slack in sigmas: the smallest sustained shift the drift rule is tuned to find is twice this.
DRIFT_SLACK = 0.5

_JUDGE = """
CREATE OR REPLACE TEMP TABLE judged AS
WITH o AS (
    SELECT s.event_id, s.sensor_id, s.sensor_type, s.site, s.event_time, s.value, s.is_late,
           row_number() OVER w AS k,
           coalesce(lag(s.value) OVER w, st.last_value) AS prev,
           coalesce(st.baseline_readings, 0) AS n0, st.baseline_mean AS mu,
           greatest(sqrt(st.baseline_variance), coalesce(f.sigma, $floor_any)) AS sigma,
           coalesce(st.repeats, 0) AS rep0, coalesce(st.drift_high, 0) AS dh0,
           coalesce(st.drift_low, 0) AS dl0, t.low AS t_low, t.high AS t_high
    FROM stage s
    LEFT JOIN sensor_state st ON st.sensor_id = s.sensor_id
    LEFT JOIN floors f ON f.sensor_type = s.sensor_type
    LEFT JOIN thresholds t ON t.sensor_type = s.sensor_type
    WINDOW w AS (PARTITION BY s.sensor_id, s.is_late ORDER BY s.event_time, s.event_id)
), z AS (
    SELECT *,
           CASE WHEN NOT is_late AND n0 >= $warmup THEN (value - mu) / sigma END AS z,
           CASE WHEN value > t_high THEN (value - t_high) / nullif(t_high - t_low, 0)
                WHEN value < t_low THEN (t_low - value) / nullif(t_high - t_low, 0) END AS over,
           -- islands of one repeated value: a new island starts where the value changes
           sum((prev IS DISTINCT FROM value)::INTEGER) OVER p AS island
    FROM o
    WINDOW p AS (PARTITION BY sensor_id, is_late ORDER BY k)
), c AS (
    SELECT *,
           CASE WHEN island = 0 THEN rep0 ELSE 0 END
               + row_number() OVER (PARTITION BY sensor_id, is_late, island ORDER BY k) AS run,
           -- a spike is the z-score's; it is no evidence of a drift
           sum(CASE WHEN z IS NULL OR abs(z) > $z THEN 0 ELSE z - $slack END) OVER p AS ch,
           sum(CASE WHEN z IS NULL OR abs(z) > $z THEN 0 ELSE -z - $slack END) OVER p AS cl
    FROM z
    WINDOW p AS (PARTITION BY sensor_id, is_late ORDER BY k)
), s AS (
    -- CUSUM S_k = max(0, S_(k-1) + d_k) in closed form: C_k - min(-S_0, min_(j<=k) C_j)
    SELECT *,
           ch - least(-dh0, min(ch) OVER p) AS drift_high,
           cl - least(-dl0, min(cl) OVER p) AS drift_low
    FROM c
    WINDOW p AS (PARTITION BY sensor_id, is_late ORDER BY k)
), r AS (
    SELECT *, greatest(drift_high, drift_low) AS drift,
           coalesce(lag(greatest(drift_high, drift_low)) OVER (PARTITION BY sensor_id, is_late ORDER BY k),
                    greatest(dh0, dl0)) AS drift_before,
           CASE WHEN over IS NOT NULL THEN 'threshold'
                WHEN is_late THEN NULL
                WHEN abs(z) > $z THEN 'zscore'
                WHEN $stuck > 0 AND run >= $stuck THEN 'stuck'
                WHEN $drift > 0 AND greatest(drift_high, drift_low) > $drift THEN 'drift' END AS rule
    FROM s
)
SELECT *,
       CASE rule WHEN 'threshold' THEN over WHEN 'zscore' THEN abs(z)
                 WHEN 'stuck' THEN run WHEN 'drift' THEN drift END AS score,
       CASE WHEN rule = 'threshold' OR mu IS NULL THEN t_low ELSE mu - $z * sigma END AS expected_low,
       CASE WHEN rule = 'threshold' OR mu IS NULL THEN t_high ELSE mu + $z * sigma END AS expected_high,
       -- conditions are recorded where they start, point anomalies at every reading
       rule IN ('threshold', 'zscore') OR (rule = 'stuck' AND run = $stuck)
           OR (rule = 'drift' AND drift_before <= $drift) AS recorded
FROM r
"""

_RECORD = """
INSERT INTO anomalies
SELECT event_id, sensor_id, sensor_type, event_time, value, rule, score, $batch_id, now()
FROM judged WHERE recorded ORDER BY event_time
"""

# The new state of every sensor with on-time readings in the batch. The baseline learns from the
# batch's normal readings: k readings weigh 1 - (1 - alpha)^k against the old baseline (until the
# baseline has 1/alpha readings, a plain running mean: n0 / (n0 + k)), and the variance is the
# mixture's (old and new parts around the new mean), so it is exact for equal weights.
_STATE = """
INSERT OR REPLACE INTO sensor_state
WITH a AS (
    SELECT sensor_id, max(sensor_type) AS sensor_type, max(site) AS site, max(k) AS kmax,
           arg_max(value, k) AS last_value, arg_max(event_time, k) AS last_event_time,
           arg_max(run, k) AS repeats, arg_max(drift_high, k) AS dh, arg_max(drift_low, k) AS dl,
           max(k) FILTER (WHERE rule IS NULL) AS last_normal_k,
           max(k) FILTER (WHERE rule IS NOT NULL) AS last_flag_k,
           max(k) FILTER (WHERE rule IS NULL OR rule NOT IN ('zscore', 'drift')) AS last_on_baseline_k,
           min(event_time) FILTER (WHERE rule IS NOT NULL) AS first_flag_time,
           max(event_time) FILTER (WHERE rule IS NOT NULL) AS last_flag_time,
           arg_max(rule, k) FILTER (WHERE rule IS NOT NULL) AS f_rule,
           arg_max(value, k) FILTER (WHERE rule IS NOT NULL) AS f_value,
           arg_max(score, k) FILTER (WHERE rule IS NOT NULL) AS f_score,
           arg_max(expected_low, k) FILTER (WHERE rule IS NOT NULL) AS f_low,
           arg_max(expected_high, k) FILTER (WHERE rule IS NOT NULL) AS f_high,
           count(*) FILTER (WHERE rule IS NULL) AS kk,
           avg(value) FILTER (WHERE rule IS NULL) AS m_b,
           var_pop(value) FILTER (WHERE rule IS NULL) AS v_b
    FROM judged WHERE NOT is_late
    GROUP BY sensor_id
), b AS (
    SELECT a.*, st.state AS state0, st.since AS since0,
           coalesce(st.baseline_readings, 0) AS n0, st.baseline_mean AS mu0, st.baseline_variance AS var0,
           CASE WHEN a.last_flag_k IS NULL THEN coalesce(st.normal_run, 0) + a.kmax
                ELSE a.kmax - a.last_flag_k END AS normal_run,
           CASE WHEN a.last_on_baseline_k IS NULL THEN coalesce(st.flagged_run, 0) + a.kmax
                ELSE a.kmax - a.last_on_baseline_k END AS flagged_run,
           st.rule AS rule0, st.rule_value AS value0, st.rule_score AS score0,
           st.expected_low AS low0, st.expected_high AS high0, st.last_anomaly_time AS last_anomaly0,
           st.relearned_at AS relearned0,
           CASE WHEN a.kk = 0 THEN 1.0
                ELSE least(power(1 - $alpha, a.kk), coalesce(st.baseline_readings, 0) / (coalesce(st.baseline_readings, 0) + a.kk))
           END AS w
    FROM a LEFT JOIN sensor_state st ON st.sensor_id = a.sensor_id
), c AS (
    SELECT *, flagged_run >= $relearn AS relearn,
           CASE WHEN kk = 0 THEN mu0 WHEN n0 = 0 THEN m_b ELSE w * mu0 + (1 - w) * m_b END AS mu1
    FROM b
)
SELECT sensor_id, sensor_type, site,
       CASE WHEN relearn THEN 0 ELSE n0 + kk END,
       CASE WHEN NOT relearn THEN mu1 END,
       CASE WHEN relearn THEN NULL WHEN kk = 0 THEN var0 WHEN n0 = 0 THEN v_b
            ELSE w * (var0 + (mu0 - mu1) ** 2) + (1 - w) * (v_b + (m_b - mu1) ** 2) END,
       last_value, last_event_time, repeats,
       CASE WHEN relearn THEN 0 ELSE least(dh, 2 * $drift) END,
       CASE WHEN relearn THEN 0 ELSE least(dl, 2 * $drift) END,
       CASE WHEN relearn THEN 0 ELSE flagged_run END,
       normal_run,
       CASE WHEN NOT relearn AND (last_flag_k IS NOT NULL OR state0 = 'anomaly') AND normal_run < $clear
            THEN 'anomaly' ELSE 'ok' END,
       coalesce(f_rule, rule0), coalesce(f_value, value0), coalesce(f_score, score0),
       CASE WHEN f_rule IS NOT NULL THEN f_low ELSE low0 END,
       CASE WHEN f_rule IS NOT NULL THEN f_high ELSE high0 END,
       CASE WHEN state0 = 'anomaly' THEN since0 ELSE coalesce(first_flag_time, since0) END,
       coalesce(last_flag_time, last_anomaly0),
       CASE WHEN relearn THEN last_event_time ELSE relearned0 END,
       now()
FROM c
"""


class Judge:
    """Runs the rules over the batch's staged readings on the merge's cursor."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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
        self._params = {
            "z": s.anomaly_zscore,
            "warmup": s.anomaly_warmup,
            "floor_any": s.anomaly_sigma_floor["*"],
            "stuck": s.anomaly_stuck_readings,
            "drift": s.anomaly_drift_limit,
            "slack": DRIFT_SLACK,
        }
        self._state_params = {
            "alpha": 2 / (s.anomaly_baseline_readings + 1),
            "relearn": s.anomaly_relearn_readings,
            "clear": s.anomaly_clear_readings,
            "drift": s.anomaly_drift_limit,
        }

    def judge(self, cur: duckdb.DuckDBPyConnection, batch_id: int) -> int:
        """Judge the ``stage`` table's readings; record anomalies, update ``sensor_state``.

        Returns how many anomalies were recorded.
        """
        cur.register("thresholds", self._thresholds)
        cur.register("floors", self._floors)
        try:
            cur.execute(_JUDGE, self._params)
            recorded = cur.execute(_RECORD, {"batch_id": batch_id}).fetchall()[0][0]
            cur.execute(_STATE, self._state_params)
        finally:
            cur.unregister("thresholds")
            cur.unregister("floors")
        return recorded
