#!/usr/bin/env bash
# Restore a backup made by deploy/backup.sh: the database dump into DATABASE, which must have
# no tables yet (create it with deploy/mysql-grants.sql), and, with JOURNAL_PATH set, the
# journal files into its directory, which must not hold them already. Stop the service first;
# start it afterwards (it replays the journal at start-up) and run `python service.py replay`
# with CALLBACK_JOURNAL_PATH naming each restored rotated file.
#
#   deploy/restore.sh BACKUP_DIRECTORY DATABASE
#
# MYSQL_DEFAULTS_FILE  client options file of a user that may create tables in DATABASE (the
#                      migrating user); default /etc/mpesa-service/backup.cnf
# JOURNAL_PATH         CALLBACK_JOURNAL_PATH to restore the journal to; unset: the journal is
#                      left alone
set -euo pipefail
shopt -s nullglob
umask 077

backup="${1:?usage: restore.sh BACKUP_DIRECTORY DATABASE}"
database="${2:?usage: restore.sh BACKUP_DIRECTORY DATABASE}"
defaults="${MYSQL_DEFAULTS_FILE:-/etc/mpesa-service/backup.cnf}"

if [[ ! "$database" =~ ^[A-Za-z0-9_]+$ ]]; then
  echo "restore.sh: database name ${database} is not letters, digits and _" >&2
  exit 2
fi
if [[ ! -r "$defaults" ]]; then
  echo "restore.sh: cannot read the client options file ${defaults}" >&2
  exit 2
fi
(cd -- "$backup" && sha256sum --quiet --strict -c SHA256SUMS)

client=(mysql --defaults-extra-file="$defaults" --batch --skip-column-names)
tables="$("${client[@]}" -e "SELECT COUNT(*) FROM information_schema.tables
  WHERE table_schema = '${database}'")"
if [[ "$tables" != 0 ]]; then
  echo "restore.sh: database ${database} already has ${tables} tables; restore into an empty one" >&2
  exit 1
fi

if [[ -n "${JOURNAL_PATH:-}" ]]; then
  directory="$(dirname -- "$JOURNAL_PATH")"
  for file in "${backup}/journal/"*; do
    if [[ -e "${directory}/$(basename -- "$file")" ]]; then
      echo "restore.sh: ${directory}/$(basename -- "$file") exists; not overwriting it" >&2
      exit 1
    fi
  done
fi

gzip -dc -- "${backup}/database.sql.gz" | "${client[@]}" --database="$database"

if [[ -n "${JOURNAL_PATH:-}" ]]; then
  mkdir -p -- "$directory"
  for file in "${backup}/journal/"*; do cp -p -- "$file" "${directory}/"; done
fi
echo "restored ${backup} into ${database}"
