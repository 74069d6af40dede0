package main

import (
	"context"
	"regexp"
	"strings"

	"github.com/keyplane/keyplane/schema"
)

// dbFlags are the flags of a command that opens the database. The URL usually holds
// the database password, so it comes from a file or the environment: argv is
// world-readable (ps, /proc/<pid>/cmdline).
type dbFlags struct {
	url, file *string
}

func addDBFlags(c *command) dbFlags {
	return dbFlags{
		url: c.flags.String("db", "", "database URL without a password, postgres://… (one with a password is refused: "+
			"ps shows argv to every user; use --db-file or KEYPLANE_DB)"),
		file: c.flags.String("db-file", "", "file holding the database URL, password included (or the URL itself in KEYPLANE_DB)"),
	}
}

// resolve returns the database URL: --db when given on the command line (refused if it
// holds a password), else the contents of --db-file, else KEYPLANE_DB.
func (f dbFlags) resolve(c *command) (string, error) {
	if c.fromArgs["db"] {
		if *f.file != "" {
			return "", usageErr("give --db or --db-file, not both")
		}
		if dbHasPassword(*f.url) {
			return "", usageErr("--db: the URL holds a password, which ps shows to every user of this machine; " +
				"put the URL in a file (--db-file) or in KEYPLANE_DB")
		}
		return *f.url, nil
	}
	text, err := secretText(*f.file, "KEYPLANE_DB", "db file")
	if err != nil {
		return "", usageErr("%v", err)
	}
	if text = strings.TrimSpace(text); text == "" {
		return "", usageErr("a database is required: --db-file, KEYPLANE_DB, or --db with a URL without a password")
	}
	return text, nil
}

// passwordKey finds a password in a key=value connection string or a URL's query
// (password=, sslpassword=), spaces around '=' allowed as libpq allows them.
var passwordKey = regexp.MustCompile(`(?i)password\s*=`)

// dbHasPassword reports whether a database URL or connection string carries a
// password: user:password@ in a URL, or a password / sslpassword parameter.
func dbHasPassword(db string) bool {
	if passwordKey.MatchString(db) {
		return true
	}
	_, rest, ok := strings.Cut(db, "://")
	if !ok {
		return false
	}
	at := strings.LastIndexByte(rest, '@')
	return at >= 0 && strings.Contains(rest[:at], ":")
}

// openStore opens a small pool on db for a command that works on the database
// directly (keys, rehome), and the store on it; closeDB releases the pool.
func openStore(ctx context.Context, db string, maxConns int32, cfg schema.Config) (store *schema.Store, closeDB func(), err error) {
	pool, err := schema.Open(ctx, db, schema.PoolConfig{MaxConns: maxConns})
	if err != nil {
		return nil, nil, err
	}
	return schema.New(pool, cfg), pool.Close, nil
}
