package main

import "errors"

// Errors of the online mode, classified by classify.
var (
	errUnreachable = errors.New("cannot reach sealboxd")
	errSealed      = errors.New("the daemon is sealed")
	errRefused     = errors.New("refused by the daemon")
	errBackoff     = errors.New("too many failed attempts")
)

func (c *cli) online() (backend, error) {
	return nil, errors.Join(errUnreachable, errors.New("the daemon's admin socket is not available in this build yet; use --keyring PATH"))
}

func (c *cli) onlineUnseal(o *opts) error { _, err := c.online(); return err }
func (c *cli) onlineSeal() error          { _, err := c.online(); return err }
func (c *cli) onlineStatus(o *opts) error { _, err := c.online(); return err }
