#!/usr/bin/env bash
# Installs WordNet 3.0 for NLTK offline, from the Debian/Ubuntu packages
# `wordnet-base` and `wordnet-sense-index` (no NLTK download at run time).
#
# The database files go to <first entry of $NLTK_DATA, or $HOME/nltk_data>/
# corpora/wordnet/, a directory NLTK searches (NLTK >= 3.10 refuses corpus
# paths outside its data directories), together with the `lexnames` file the
# packages do not ship. Safe to run again: returns at once when installed.
# Needs root (or sudo) only when the packages are missing.
set -euo pipefail

DATA_ROOT=${NLTK_DATA:-$HOME/nltk_data}
DATA_ROOT=${DATA_ROOT%%:*}
TARGET="$DATA_ROOT/corpora/wordnet"
SOURCE=/usr/share/wordnet
NEEDED=(data.noun data.verb data.adj data.adv index.noun index.verb
  index.adj index.adv noun.exc verb.exc adj.exc adv.exc index.sense lexnames)

installed() {
  local name
  for name in "${NEEDED[@]}"; do
    [ -s "$TARGET/$name" ] || return 1
  done
}

if installed; then
  echo "WordNet already installed in $TARGET"
  exit 0
fi

if [ ! -s "$SOURCE/data.noun" ] || [ ! -s "$SOURCE/index.sense" ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      SUDO=sudo
    else
      echo "error: installing wordnet-base and wordnet-sense-index needs" \
        "root; run this script as root or install them first." >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Refresh the package lists only when they do not know the packages.
  if ! apt-cache show wordnet-base wordnet-sense-index >/dev/null 2>&1; then
    $SUDO apt-get update -qq
  fi
  $SUDO apt-get install -y -qq --no-install-recommends \
    wordnet-base wordnet-sense-index >/dev/null
fi

mkdir -p "$TARGET"
shopt -s nullglob
cp -f "$SOURCE"/data.* "$SOURCE"/index.* "$SOURCE"/*.exc "$TARGET"/

# The standard WordNet 3.0 `lexnames`: number, lexicographer file, pos.
tmp=$(mktemp "$TARGET/.lexnames.XXXXXX")
i=0
for entry in \
  adj.all:3 adj.pert:3 adv.all:4 noun.Tops:1 noun.act:1 noun.animal:1 \
  noun.artifact:1 noun.attribute:1 noun.body:1 noun.cognition:1 \
  noun.communication:1 noun.event:1 noun.feeling:1 noun.food:1 \
  noun.group:1 noun.location:1 noun.motive:1 noun.object:1 noun.person:1 \
  noun.phenomenon:1 noun.plant:1 noun.possession:1 noun.process:1 \
  noun.quantity:1 noun.relation:1 noun.shape:1 noun.state:1 \
  noun.substance:1 noun.time:1 verb.body:2 verb.change:2 verb.cognition:2 \
  verb.communication:2 verb.competition:2 verb.consumption:2 \
  verb.contact:2 verb.creation:2 verb.emotion:2 verb.motion:2 \
  verb.perception:2 verb.possession:2 verb.social:2 verb.stative:2 \
  verb.weather:2 adj.ppl:3; do
  printf '%02d\t%s\t%s\n' "$i" "${entry%%:*}" "${entry##*:}" >>"$tmp"
  i=$((i + 1))
done
chmod 644 "$tmp"
mv -f "$tmp" "$TARGET/lexnames"

if ! installed; then
  echo "error: WordNet files missing in $TARGET after the install." >&2
  exit 1
fi
echo "WordNet installed in $TARGET"
