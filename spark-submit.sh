#!/usr/bin/env bash
# Submit a recbatch job to Spark:   ./spark-submit.sh JOB [--config FILE] [--set key=value ...]
#
#   JOB        a file jobs/JOB.py (e.g. pipeline, generate_events, ingest_events), or spark-sql
#              for pyspark's SQL shell with the tables by name (options after the config go to it)
#   --config   YAML config (default conf/local.yaml); --master comes from spark.master in it
#              (local[*] or spark://host:port)
#   --set      override any config key (repeatable)
#
# It installs the environment on first use (lib/install.sh), validates the config before any
# Spark work, packages lib/recbatch as a .zip for --py-files, and passes the Delta/GraphFrames jars
# resolved into .jars/ with --jars. Extra spark-submit options can be given in SPARK_SUBMIT_OPTS_EXTRA.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
usage() {
  echo "usage: $0 JOB [--config FILE] [--set key=value ...]" >&2
  echo "jobs: $(cd "$ROOT/jobs" && ls ./*.py | sed 's|./||; s|\.py$||' | grep -v '^_' | tr '\n' ' ')" >&2
  exit 2
}
[[ $# -ge 1 && $1 != -* ]] || usage
JOB="$1"; shift
JOB_FILE="$ROOT/jobs/$JOB.py"
[[ -f $JOB_FILE || $JOB == spark-sql ]] || { echo "recbatch: no such job '$JOB'" >&2; usage; }

"$ROOT/lib/install.sh"
PY="$ROOT/.venv/bin/python"
export RECBATCH_HOME="$ROOT"
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PY}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$PY}"

# ./spark-submit.sh spark-sql [--config F] [--set k=v ...] [spark-sql options, e.g. -e "SQL"]:
# pyspark's spark-sql shell with the jars, Delta and the tables registered by name (recbatch.catalog).
if [[ $JOB == spark-sql ]]; then
  mapfile -d '' -t SQL_CMD < <("$PY" -m recbatch.catalog "$@" || printf '__failed__\0')
  [[ ${SQL_CMD[-1]:-} != "__failed__" ]] || exit 2
  export PATH="$ROOT/.venv/bin:$PATH"   # pyspark's launcher scripts find Spark through python
  exec "${SQL_CMD[@]}"
fi

# Config errors stop here, before a JVM starts. The config arguments are the job's own arguments.
mapfile -t LAUNCH < <("$PY" -m recbatch.cli "$@" || echo "__failed__")
[[ ${LAUNCH[-1]:-} != "__failed__" ]] || exit 2

# The library as a zip for --py-files: executors on a cluster import recbatch from it.
ZIP="$ROOT/var/dist/recbatch.zip"
"$PY" - "$ROOT/lib" "$ZIP" <<'PY'
import sys, zipfile
from pathlib import Path
lib, zip_path = Path(sys.argv[1]), Path(sys.argv[2])
zip_path.parent.mkdir(parents=True, exist_ok=True)
tmp = zip_path.with_suffix(".tmp")
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
    for path in sorted((lib / "recbatch").rglob("*.py")):
        zf.write(path, path.relative_to(lib).as_posix())
tmp.replace(zip_path)
PY

# shellcheck disable=SC2086
exec "$ROOT/.venv/bin/spark-submit" \
  "${LAUNCH[@]}" \
  --py-files "$ZIP" \
  --driver-java-options "-Dlog4j2.configurationFile=file:$ROOT/conf/log4j2.properties" \
  --conf "spark.pyspark.python=$PYSPARK_PYTHON" \
  --conf "spark.pyspark.driver.python=$PYSPARK_DRIVER_PYTHON" \
  ${SPARK_SUBMIT_OPTS_EXTRA:-} \
  "$JOB_FILE" "$@"
