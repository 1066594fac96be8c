"""Wire codecs: each turns its payload into one protocol-neutral request and an answer back into its body."""
