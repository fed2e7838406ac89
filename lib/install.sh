#!/usr/bin/env bash
# Installs everything recbatch needs into the project folder, once:
#   .venv/   one Python environment for the Spark driver, the executors (PYSPARK_PYTHON),
#            the Petastorm readers and the torch workers: they must share one interpreter.
#   .jars/   the JVM jars PySpark does not ship (Delta, GraphFrames), resolved from Maven Central
#            by Maven (lib/jvm/pom.xml) and then used offline by every run.
#
# Idempotent: a stamp keyed by the hash of setup.py and lib/jvm/pom.xml makes a second call a no-op.
#   lib/install.sh          runtime environment (what the pipeline needs)
#   lib/install.sh --dev    plus the dev extra (pytest, ruff)
#   lib/install.sh --force  reinstall even if stamped
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
JARS="$ROOT/.jars"
PYTHON_BIN="${RECBATCH_BOOTSTRAP_PYTHON:-python3}"
DEV=0
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --force) FORCE=1 ;;
    *) echo "install.sh: unknown option '$arg' (expected --dev or --force)" >&2; exit 2 ;;
  esac
done

log() { printf '[recbatch install] %s\n' "$*" >&2; }

require() {
  command -v "$1" >/dev/null 2>&1 || { log "ERROR: '$1' is required ($2) but was not found on PATH"; exit 1; }
}

install_python_env() {
  local extra="" suffix="" hash
  if [[ $DEV == 1 ]]; then extra="[dev]"; suffix="-dev"; fi
  hash="$(sha256sum "$ROOT/setup.py" | cut -c1-16)"
  # A dev install also satisfies a runtime request.
  if [[ $FORCE == 0 && ( -f "$VENV/.recbatch-installed-$hash$suffix" || -f "$VENV/.recbatch-installed-$hash-dev" ) ]]; then
    return 0
  fi

  require "$PYTHON_BIN" "Python 3.11 creates the project environment"
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating Python environment in .venv"
    "$PYTHON_BIN" -m venv "$VENV"
  fi
  log "installing recbatch$extra and its pinned dependencies into .venv (first time: torch and CUDA wheels, a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip==25.3"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT$extra"
  rm -f "$VENV"/.recbatch-installed-*
  touch "$VENV/.recbatch-installed-$hash$suffix"
}

# Resolve one pom profile into .jars/<profile>/. GraphFrames is optional at install time only
# because its absence must not stop the stages that do not use it: the reason is recorded in
# .jars/<profile>/UNAVAILABLE and every GraphFrames call site reports it.
resolve_jars() {
  local profile="$1" required="$2"
  local dest="$JARS/$profile" pomhash log_file
  pomhash="$(sha256sum "$ROOT/lib/jvm/pom.xml" | cut -c1-16)"
  if [[ $FORCE == 0 && -f "$dest/.resolved-$pomhash" ]]; then return 0; fi
  # A recent failure is not retried on every run (each try costs a Maven start); --force retries.
  if [[ $FORCE == 0 && -n "$(find "$dest/UNAVAILABLE" -mmin -360 2>/dev/null)" ]]; then
    log "WARNING: $profile jars unavailable (see .jars/$profile/UNAVAILABLE; lib/install.sh --force retries)"
    return 0
  fi
  require mvn "Maven resolves the Delta and GraphFrames jars from Maven Central"
  require java "Spark runs on Java 17"
  log "resolving $profile jars from Maven Central into .jars/$profile"
  rm -rf "$dest"; mkdir -p "$dest"
  log_file="$(mktemp)"
  if mvn -B -q -U -f "$ROOT/lib/jvm/pom.xml" -P "$profile" dependency:copy-dependencies \
      -DoutputDirectory="$dest" -DincludeScope=runtime \
      -DexcludeGroupIds=org.apache.spark,org.scala-lang,org.slf4j,org.antlr >"$log_file" 2>&1; then
    touch "$dest/.resolved-$pomhash"
    log "$profile: $(ls "$dest"/*.jar | xargs -n1 basename | tr '\n' ' ')"
  else
    { echo "Maven could not resolve the '$profile' jars (lib/jvm/pom.xml) from Maven Central:";
      grep -E 'ERROR|Could not|not found|Missing' "$log_file" | sed 's/\x1b\[[0-9;]*m//g' | head -1; } >"$dest/UNAVAILABLE"
    if [[ $required == 1 ]]; then
      log "ERROR: $(cat "$dest/UNAVAILABLE")"; rm -f "$log_file"; exit 1
    fi
    log "WARNING: $(cat "$dest/UNAVAILABLE")"
    log "WARNING: stages that need $profile will fail with this reason until it resolves (rerun lib/install.sh --force)"
  fi
  rm -f "$log_file"
}

install_python_env
resolve_jars delta 1
resolve_jars graphframes 0
