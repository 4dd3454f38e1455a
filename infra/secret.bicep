// One secret of the app's Key Vault, written only when infra/main.bicep is given its value (a later
// deployment without it keeps the stored one). App settings reference it by name:
// @Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>/).

param vaultName string
param name string
@secure()
param value string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41:These secrets expire with their source (the app registration's secret, a flow's URL) or are rotated by hand (the signing key): a vault expiry date would only stop the app early.
  parent: vault
  name: name
  properties: {
    value: value
    contentType: 'text/plain'
  }
}
