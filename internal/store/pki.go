package store

// pkiSchema holds the tables of the cluster's certificate authority: join tokens and
// issued host certificates.
const pkiSchema = ``
