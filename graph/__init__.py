"""The GraphQL face of Shareflow: types, loaders, mutations, subscriptions."""
