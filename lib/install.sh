#!/usr/bin/env bash
# Installs everything recbatch needs into the project folder, once:
#   .venv/   one Python environment for the Spark driver, the executors (PYSPARK_PYTHON),
#            the Petastorm readers and the torch workers: they must share one interpreter.
#   .jars/   the JVM jars PySpark does not ship (Delta, GraphFrames), resolved by Maven
#            (lib/jvm/pom.xml) and then used offline by every run.
#
# Where the jars come from: Maven Central first, then, only for what Central does not serve, the
# extra repositories in RECBATCH_MAVEN_REPOS (comma-separated URLs). Unset, that defaults to the
# file repository ../shared/maven beside the project when the folder exists (the GraphFrames jars
# built from upstream's release tags, for a Central mirror that serves no io.graphframes
# artifacts); RECBATCH_MAVEN_REPOS="" turns the fallback off. The log names the repository that
# served each jar. On a machine that reaches the public Maven Central no fallback is needed.
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

MAVEN_CENTRAL="${RECBATCH_MAVEN_CENTRAL:-https://repo.maven.apache.org/maven2}"
MAVEN_LOCAL_REPO="${RECBATCH_MAVEN_LOCAL_REPO:-$HOME/.m2/repository}"

# The extra repositories, one URL per line: RECBATCH_MAVEN_REPOS, or ../shared/maven by default.
extra_repositories() {
  if [[ -n ${RECBATCH_MAVEN_REPOS+set} ]]; then
    tr ',' '\n' <<<"$RECBATCH_MAVEN_REPOS" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//' | grep -v '^$' || true
  elif [[ -d "$ROOT/../shared/maven" ]]; then
    echo "file://$(cd "$ROOT/../shared/maven" && pwd)"
  fi
}

# Maven global settings with one always-active profile listing Central first and then the extra
# repositories, so Maven asks them in that order. Global (-gs), not user settings: a user's own
# ~/.m2/settings.xml (mirrors, credentials) still applies on top.
write_maven_settings() {
  local file="$1" i=0 url
  {
    echo '<settings><profiles><profile><id>recbatch-repositories</id><repositories>'
    echo "<repository><id>central</id><url>$MAVEN_CENTRAL</url></repository>"
    while IFS= read -r url; do
      i=$((i + 1))
      echo "<repository><id>recbatch-extra-$i</id><url>$url</url></repository>"
    done < <(extra_repositories)
    echo '</repositories></profile></profiles>'
    echo '<activeProfiles><activeProfile>recbatch-repositories</activeProfile></activeProfiles></settings>'
  } >"$file"
}

# Which repository served a resolved jar: Maven records it in _remote.repositories beside the
# artifact in the local repository ("<file>>[repo id]=").
served_by() {
  local jar="$1" id url i=0 record
  record="$(find "$MAVEN_LOCAL_REPO" -name "$jar" 2>/dev/null | head -1)"
  [[ -n $record ]] || { echo "unknown"; return; }
  id="$(grep -m1 "^$jar>" "$(dirname "$record")/_remote.repositories" 2>/dev/null | sed 's/^[^>]*>//; s/=$//')"
  case "$id" in
    central) echo "Maven Central ($MAVEN_CENTRAL)" ;;
    recbatch-extra-*)
      while IFS= read -r url; do
        i=$((i + 1)); [[ "recbatch-extra-$i" == "$id" ]] && { echo "$url"; return; }
      done < <(extra_repositories)
      echo "$id" ;;
    "") echo "the local repository $MAVEN_LOCAL_REPO" ;;
    *) echo "$id" ;;
  esac
}

# Resolve one pom profile into .jars/<profile>/. Every profile is required: the pipeline's stages
# stand on Delta and on GraphFrames alike, so a missing jar stops the install with Maven's reason.
resolve_jars() {
  local profile="$1"
  local dest="$JARS/$profile" pomhash log_file settings jar repos
  pomhash="$(sha256sum "$ROOT/lib/jvm/pom.xml" | cut -c1-16)"
  if [[ $FORCE == 0 && -f "$dest/.resolved-$pomhash" ]]; then return 0; fi
  require mvn "Maven resolves the Delta and GraphFrames jars"
  require java "Spark runs on Java 17"
  repos="$(extra_repositories | paste -sd ' ' -)"
  log "resolving $profile jars into .jars/$profile from Maven Central${repos:+, then $repos}"
  rm -rf "$dest"; mkdir -p "$dest"
  log_file="$(mktemp)"; settings="$(mktemp --suffix=.xml)"
  write_maven_settings "$settings"
  if mvn -B -q -U -gs "$settings" -Dmaven.repo.local="$MAVEN_LOCAL_REPO" \
      -f "$ROOT/lib/jvm/pom.xml" -P "$profile" dependency:copy-dependencies \
      -DoutputDirectory="$dest" -DincludeScope=runtime \
      -DexcludeGroupIds=org.apache.spark,org.scala-lang,org.slf4j,org.antlr >"$log_file" 2>&1; then
    touch "$dest/.resolved-$pomhash"
    for jar in "$dest"/*.jar; do
      log "$profile: $(basename "$jar") from $(served_by "$(basename "$jar")")"
    done
  else
    log "ERROR: Maven could not resolve the '$profile' jars (lib/jvm/pom.xml) from Maven Central${repos:+ or $repos}:"
    grep -E 'ERROR|Could not|not found|Missing' "$log_file" | sed 's/\x1b\[[0-9;]*m//g' | head -3 >&2
    log "set RECBATCH_MAVEN_REPOS to a repository that serves them, then rerun lib/install.sh"
    rm -f "$log_file" "$settings"; rm -rf "$dest"; exit 1
  fi
  rm -f "$log_file" "$settings"
}

install_python_env
resolve_jars delta
resolve_jars graphframes
