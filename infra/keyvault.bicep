// The Key Vault of the app's secrets (infra/main.bicep creates it unless existingKeyVaultName is
// given): RBAC authorization (the app's identity gets Key Vault Secrets User), soft delete and
// purge protection.

@minLength(3)
@maxLength(24)
param name string
param location string
param tags object

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:The Function App resolves Key Vault references over the vault's public endpoint (no VNet integration here); access is by RBAC to the app's identity only.
  // checkov:skip=CKV_AZURE_189:Same as CKV_AZURE_109: Key Vault references need network access to the vault.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

output id string = vault.id
