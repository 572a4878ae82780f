package config

import _ "embed"

// Shipped is the annotated sealboxd.toml the project installs: every key
// at its default, with what it does. The sealboxd.toml(5) man page is
// generated from it, and a test checks it parses to Default().
//
//go:embed sealboxd.toml
var Shipped string
