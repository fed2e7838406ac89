"""Airflow DAG: the nightly recbatch refresh, one run per logical date.

Copy to your Airflow dags/ folder and set RECBATCH_HOME (a checkout on the machine that submits
to Spark) and RECBATCH_CONFIG. The refresh is one command: the pipeline records every stage in
its Delta `runs` table, skips what already succeeded for the date, and holds a per-date lock, so
Airflow retries are safe (a retry resumes at the failed stage). Exit statuses
(docs/operations.md): 0 done, 1 a stage failed, 2 bad config (retrying will not help), 75 the
date is being refreshed by another run (retry later).

Not exercised by the test suite (Airflow is not a dependency of recbatch); written for Airflow 2.x.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

RECBATCH_HOME = os.environ.get("RECBATCH_HOME", "/opt/recbatch")
RECBATCH_CONFIG = os.environ.get("RECBATCH_CONFIG", "conf/cluster.yaml")

with DAG(
    dag_id="recbatch_refresh",
    description="Nightly refresh of recbatch's Delta tables for one run date",
    schedule="30 2 * * *",  # after the day's events have landed
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,  # the per-date lock would refuse a second one anyway (exit 75)
    default_args={
        "retries": 3,
        "retry_delay": timedelta(minutes=15),
        "execution_timeout": timedelta(hours=4),
    },
    tags=["recbatch"],
) as dag:
    BashOperator(
        task_id="pipeline",
        cwd=RECBATCH_HOME,
        bash_command=(
            "./spark-submit.sh pipeline --no-generate "
            f"--config {RECBATCH_CONFIG} --set run_date={{{{ ds }}}}"
        ),
    )
