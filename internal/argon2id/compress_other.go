//go:build !amd64 || purego

package argon2id

// compress is the compression function in use.
var compress compressFunc = compressGeneric
