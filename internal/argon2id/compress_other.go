//go:build !amd64 || purego

package argon2id

// compressors lists the implementations this CPU can run, best first.
func compressors() []compressor { return []compressor{genericCompressor} }
