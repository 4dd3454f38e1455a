// The app's storage account (infra/main.bicep creates it unless existingStorageAccountName is
// given): AzureWebJobsStorage by identity only (no shared key), the deployment package, run
// documents, the job queue and the full-sync lease.

@minLength(3)
@maxLength(24)
param name string
param location string
param tags object

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches its storage over the public endpoint; access is by Entra identity only (shared keys off, data roles for the app's identity alone).
  // checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: the host and the app need the public endpoint; no key or SAS can be used (allowSharedKeyAccess false).
  // checkov:skip=CKV_AZURE_206:LRS is enough: run documents, the job queue and the deployment package are rewritten by the next run or deployment.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: { enabled: true, keyType: 'Account' }
        queue: { enabled: true, keyType: 'Account' }
        table: { enabled: true, keyType: 'Account' }
        file: { enabled: true, keyType: 'Account' }
      }
    }
  }
}

output id string = account.id
