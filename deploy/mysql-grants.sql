-- The payments service's database and its two MySQL/MariaDB users, with only what each needs.
-- Run as an administrator (`mariadb -u root < mysql-grants.sql`) after replacing every
-- {{placeholder}}; left in place, the first statement is a syntax error and nothing is made.
--   {{database}}          the service's database, e.g. payments. In a GRANT, _ and % in a
--                         database name are wildcards: choose one without them.
--   {{app_host}}          where the service connects from: 127.0.0.1 for a DATABASE_URL on the
--                         same machine (PyMySQL connects over TCP), else the app server's address
--   {{migrate_user}}, {{migrate_password}}   runs `python service.py migrate`, and
--                         deploy/backup.sh and deploy/restore.sh; never the running service
--   {{runtime_user}}, {{runtime_password}}   the running service's DATABASE_URL
-- Passwords: long and random, without ' or \ (they are written inside '...').

CREATE DATABASE IF NOT EXISTS {{database}} CHARACTER SET utf8mb4;

-- Migrations create, alter and drop tables and indexes and write rows (alembic_version and the
-- data they move). A restore drops and creates the tables it loads.
CREATE USER '{{migrate_user}}'@'{{app_host}}' IDENTIFIED BY '{{migrate_password}}';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX
    ON {{database}}.* TO '{{migrate_user}}'@'{{app_host}}';

-- The service reads and writes rows, nothing more: no DDL, no LOCK TABLES (it locks rows with
-- INSERT ... ON DUPLICATE KEY UPDATE inside its transactions), no temporary tables.
CREATE USER '{{runtime_user}}'@'{{app_host}}' IDENTIFIED BY '{{runtime_password}}';
GRANT SELECT, INSERT, UPDATE, DELETE ON {{database}}.* TO '{{runtime_user}}'@'{{app_host}}';
