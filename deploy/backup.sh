#!/usr/bin/env bash
# Back up the service's database and its callback journal into a new directory named for the
# time (UTC) under BACKUP_ROOT: database.sql.gz, journal/ (the journal and its rotated files)
# and SHA256SUMS. Safe while the service runs: the dump is one consistent transaction
# (--single-transaction, InnoDB) and the journal is copied after it, so every callback in the
# dump is in the copied journal too, and `python service.py replay` after a restore applies
# those that came in while the dump ran.
#
#   deploy/backup.sh DATABASE
#
# MYSQL_DEFAULTS_FILE  client options file ([client] user, password, host, port), readable by
#                      root only: the password is never on a command line or in the output
#                      (default /etc/mpesa-service/backup.cnf)
# JOURNAL_PATH         CALLBACK_JOURNAL_PATH (default
#                      /var/lib/mpesa-service/journal/b2c_callbacks.log)
# BACKUP_ROOT          where the dated directories go (default /var/backups/mpesa-service)
set -euo pipefail
umask 077

database="${1:?usage: backup.sh DATABASE}"
defaults="${MYSQL_DEFAULTS_FILE:-/etc/mpesa-service/backup.cnf}"
journal="${JOURNAL_PATH:-/var/lib/mpesa-service/journal/b2c_callbacks.log}"
root="${BACKUP_ROOT:-/var/backups/mpesa-service}"

if [[ ! -r "$defaults" ]]; then
  echo "backup.sh: cannot read the client options file ${defaults}" >&2
  exit 2
fi
mkdir -p -- "$root"
target="${root}/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -- "$target" # fails rather than mixing two backups in one directory
mkdir -- "${target}/journal"

# No LOCK TABLES statements in the dump, so that the migrating user (no LOCK TABLES grant) can
# restore it; no tablespaces, which would need the PROCESS privilege.
mysqldump --defaults-extra-file="$defaults" --single-transaction --skip-add-locks \
  --no-tablespaces --hex-blob --default-character-set=utf8mb4 -- "$database" |
  gzip >"${target}/database.sql.gz.partial"
mv -- "${target}/database.sql.gz.partial" "${target}/database.sql.gz"

shopt -s nullglob
for file in "$journal"*; do
  if [[ -f "$file" ]]; then cp -p -- "$file" "${target}/journal/"; fi
done

(cd -- "$target" && find . -type f ! -name SHA256SUMS -print0 | sort -z |
  xargs -0 sha256sum -- >SHA256SUMS)
echo "$target"
