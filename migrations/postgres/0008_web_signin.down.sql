DROP TABLE sessions;
DROP INDEX researchers_sign_in_name;
ALTER TABLE accounts DROP COLUMN password_hash;
ALTER TABLE researchers DROP COLUMN password_hash;
ALTER TABLE researchers DROP COLUMN role;
