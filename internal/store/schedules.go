package store

// schedulesSchema holds the tables of scheduled migrations.
const schedulesSchema = ``
