//go:build amd64 && !purego

package argon2id

var compress compressFunc = compressGeneric
