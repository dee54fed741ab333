#!/usr/bin/env bash
# Debian packages vidnotes needs: ffmpeg (decoding), espeak-ng + sox (sample speech),
# poppler-utils (pdftotext in tests), and the Asterisk prompts (real speech with transcripts:
# English, Russian, French, Spanish, Italian), and PostgreSQL's server binaries (Airflow's metadata
# database, a cluster of the project's own: scripts/postgres.sh), and Chromium with its WebDriver (the
# web page's browser tests).
# `system-deps.sh bench` adds the text sources of bench/bench_chapters.py: prose documents
# (debian-handbook, python3.11-doc, manpages-ru), and the Fish Fillets NG voices of bench/bench_diarize.py.
set -euo pipefail
PKGS=(ffmpeg espeak-ng sox poppler-utils asterisk-core-sounds-en asterisk-core-sounds-en-g722 pocketsphinx-testdata postgresql)
PKGS+=(chromium chromium-driver)  # the web page's browser tests (selenium, headless) and its screenshots
for lang in ru fr es it; do  # real speech in other languages (text + 8 kHz audio): tests and benchmarks
  PKGS+=("asterisk-core-sounds-$lang" "asterisk-core-sounds-$lang-wav")
done
if [ "${1:-}" = "bench" ]; then
  # prose documents (bench_chapters.py); the acted Czech and Dutch dialogue of Fish Fillets NG, two
  # main voices each (bench_diarize.py)
  PKGS+=(debian-handbook python3.11-doc manpages-ru fillets-ng-data fillets-ng-data-cs fillets-ng-data-nl)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages: ${missing[*]}" >&2
if [[ " ${missing[*]} " == *" postgresql "* ]]; then  # the binaries only: no system cluster made at install
  $SUDO mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/vidnotes.conf >/dev/null
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
