// work365-fn on Azure Functions Flex Consumption (Linux, Python 3.11), secretless where Azure allows:
// a user-assigned managed identity for storage, Key Vault, Application Insights, Dataverse and (through a
// federated credential on the app registration) Partner Center. Deploy: docs/deploy.md.
//   az deployment group create -g <rg> -f infra/main.bicep -p clientId=<guid> dataverseUrl=https://<org>.crm.dynamics.com
// (infra/main.parameters.json is azd's: `azd up` fills it from the azd environment.)
// Flex Consumption: https://learn.microsoft.com/azure/azure-functions/flex-consumption-how-to
// Schema (functionAppConfig): https://learn.microsoft.com/azure/templates/microsoft.web/sites
// Schedules are NCRONTAB in UTC: Flex Consumption has no TZ / WEBSITE_TIME_ZONE.
// Checked by tests/unit/test_infra.py: checkov (every skip says why) and the settings parity with
// work365_fn/settings.py (every app setting below is one the code reads, or a platform setting).
targetScope = 'resourceGroup'

@description('Name of the environment (azd) or deployment: it seeds the unique resource names.')
@minLength(1)
@maxLength(40)
param environmentName string = 'work365'

@description('Region of every resource: one that offers Flex Consumption (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Name of the Function App (global: <name>.azurewebsites.net). Empty: work365-<unique>.')
param functionAppName string = ''

// ---- what the service connects to ------------------------------------------------------------

@description('Entra tenant (GUID) of the app registration and of Dataverse: WORK365_TENANT_ID.')
param tenantId string = tenant().tenantId

@description('Client id (GUID) of the app registration: WORK365_CLIENT_ID. With partnerCenterAuth=federated, the app registration that trusts the managed identity.')
param clientId string

@description('The Dataverse org URL, https://<org>.crm.dynamics.com: WORK365_DATAVERSE_URL.')
param dataverseUrl string

@description('How the app signs in to Dataverse: managed-identity (the user-assigned identity; docs/identity.md) or client-credentials (the app registration secret).')
@allowed(['managed-identity', 'client-credentials'])
param dataverseAuth string = 'managed-identity'

@description('How the app signs in to Partner Center: federated (the app registration trusts the managed identity; docs/identity.md) or client-credentials (its secret).')
@allowed(['federated', 'client-credentials'])
param partnerCenterAuth string = 'federated'

@description('Partner Center tenant (GUID), when it differs from tenantId: WORK365_PC_TENANT_ID. Empty: tenantId.')
param partnerCenterTenantId string = ''

@description('A separate app registration for Partner Center (GUID): WORK365_PC_CLIENT_ID. Empty: clientId.')
param partnerCenterClientId string = ''

@description('The app registration client secret, stored in Key Vault as work365-client-secret (only with a client-credentials mode). Empty: the secret is not written (keep the one in the vault).')
@secure()
param clientSecret string = ''

@description('The client secret\'s end date (2026-12-31), as the app registration shows it: WORK365_CLIENT_SECRET_EXPIRES. Runs warn 30 days before, /api/health fails 7 days before. Empty: not watched.')
param clientSecretExpires string = ''

@description('The separate Partner Center secret\'s end date: WORK365_PC_CLIENT_SECRET_EXPIRES. Empty: not watched.')
param partnerCenterClientSecretExpires string = ''

@description('The separate Partner Center app registration secret (Key Vault: work365-pc-client-secret), only with partnerCenterClientId and partnerCenterAuth=client-credentials.')
@secure()
param partnerCenterClientSecret string = ''

@description('The key that signs status links (32+ random characters, e.g. openssl rand -base64 48), stored in Key Vault as work365-run-signing-key. Give it on the first deployment; empty later keeps the stored one.')
@secure()
param runSigningKey string = ''

// ---- what the service does ---------------------------------------------------------------------

@description('NCRONTAB schedule of the timer, six fields, in UTC (Flex Consumption has no time zone setting): WORK365_SYNC_SCHEDULE.')
param syncSchedule string = '0 0 * * * *'

@description('Create mode: create Dataverse records for Partner Center subscriptions that have none (WORK365_CREATE_MISSING).')
param createMissing bool = false

@description('Write a Dataverse note on each record the service assigns or creates (WORK365_WRITE_NOTES).')
param writeNotes bool = false

@description('Cutoff override, ISO-8601 (2026-01-01T00:00:00Z): WORK365_ASSOCIATE_SINCE. Empty: from Dataverse.')
param associateSince string = ''

@description('Landing rules as inline JSON (the app content is read-only on Flex Consumption): WORK365_LANDING_RULES_FILE. Empty: the default-contract rule alone.')
param landingRules string = ''

@description('Schema map override: the path of a JSON file shipped in the deployed zip (WORK365_SCHEMA_FILE). Empty: the default Work 365 names.')
param schemaFile string = ''

@description('Teams Workflows or Power Automate URL for the digest after timer runs, stored in Key Vault as work365-notify-url (it carries a signature). Empty on a later deployment keeps the stored one; see notify.')
@secure()
param notifyUrl string = ''

@description('Send the digest after timer runs (needs notifyUrl once, or the work365-notify-url secret in the vault).')
param notify bool = false

@description('Digest format: teams (an Adaptive Card) or json (the run summary): WORK365_NOTIFY_FORMAT.')
@allowed(['teams', 'json'])
param notifyFormat string = 'teams'

@description('A link the Teams card offers ("Open the report"): WORK365_REPORT_URL. Empty: none.')
param reportUrl string = ''

@description('Any other WORK365_* setting of docs/configuration.md, as strings (they win over the ones above). Secrets do not belong here: use Key Vault references.')
param extraAppSettings object = {}

// ---- scale --------------------------------------------------------------------------------------

@description('The most instances the app scales out to; also WORK365_MAX_INSTANCES, so the instances share the APIs\' request limits (docs/operations.md#scaling-out).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 2

@description('Memory of each instance, MB.')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

// ---- existing resources (empty: created here) ---------------------------------------------------

@description('An existing storage account in this resource group for the app (AzureWebJobsStorage, run documents, job queue). Empty: one is created.')
param existingStorageAccountName string = ''

@description('An existing Key Vault in this resource group (RBAC authorization). Empty: one is created.')
param existingKeyVaultName string = ''

@description('Resource id of an existing Log Analytics workspace (any resource group). Empty: one is created.')
param existingLogAnalyticsWorkspaceId string = ''

// ---- alerts -------------------------------------------------------------------------------------

@description('Resource id of an action group the alerts notify (e-mail, Teams, ...). Empty: the alert rules fire without notifying anyone (see them in the portal).')
param actionGroupId string = ''

@description('The longest time between two runs of syncSchedule, in hours (Bicep cannot read the schedule: give it): the alert fires when no run succeeded in twice this. 24 at most (a log alert looks back 48 h): for a schedule with longer gaps (weekdays only, weekly) set createAlerts=false and watch /api/health with an availability test (docs/operations.md#monitoring).')
@minValue(1)
@maxValue(24)
param scheduleIntervalHours int = 1

@description('The alert fires when a run leaves more subscriptions than this unassigned.')
@minValue(0)
param unassignedThreshold int = 0

@description('Create the three alert rules.')
param createAlerts bool = true

// ---- names --------------------------------------------------------------------------------------

var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var appName = empty(functionAppName) ? 'work365-${token}' : functionAppName
var storageName = empty(existingStorageAccountName) ? 'stw365${token}' : existingStorageAccountName
var vaultName = empty(existingKeyVaultName) ? 'kv-w365-${take(token, 13)}' : existingKeyVaultName
var deploymentContainer = 'app-package-${take(token, 13)}'
var tags = { 'azd-env-name': environmentName, application: 'work365-fn' }

// Built-in role definition ids: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// ---- identity -----------------------------------------------------------------------------------

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${appName}'
  location: location
  tags: tags
}

// ---- monitoring ---------------------------------------------------------------------------------

resource workspaceNew 'Microsoft.OperationalInsights/workspaces@2023-09-01' = if (empty(existingLogAnalyticsWorkspaceId)) {
  name: 'log-${appName}'
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

var workspaceId = empty(existingLogAnalyticsWorkspaceId) ? workspaceNew.id : existingLogAnalyticsWorkspaceId

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${appName}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspaceId
    // Entra authentication only: the app sends telemetry as its identity
    // (APPLICATIONINSIGHTS_AUTHENTICATION_STRING), so the connection string alone cannot write.
    DisableLocalAuth: true
  }
}

// ---- storage ------------------------------------------------------------------------------------

module storageNew 'storage.bicep' = if (empty(existingStorageAccountName)) {
  name: 'work365-storage'
  params: { name: storageName, location: location, tags: tags }
}

// The account, new or existing, by name (its properties are never read: the URLs are built from the
// name, so nothing waits on a lookup of an account that this deployment is still creating).
resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageName
}

var blobEndpoint = 'https://${storageName}.blob.${environment().suffixes.storage}'

// Flex Consumption deploys the zip into this container, with the app's identity. (Named by path, so
// an existing account's blob service settings are left as they are.)
resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  name: '${storageName}/default/${deploymentContainer}'
  properties: { publicAccess: 'None' }
  dependsOn: [storageNew]
}

// The host's identity-based AzureWebJobsStorage needs blob (keys, leases, timers' singleton locks,
// the deployment package) and queue (the jobs queue trigger) roles; the app's own code uses the
// same two (run documents, the full-sync lease, the job queue). Table: the host writes its
// diagnostic events to Table storage through AzureWebJobsStorage (event AZFD0003 when it cannot:
// https://learn.microsoft.com/azure/azure-functions/errors-diagnostics/diagnostic-events/azfd0003),
// so the identity gets Storage Table Data Contributor too; the app's code itself uses no table.
// https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity
resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in [roles.storageBlobDataOwner, roles.storageQueueDataContributor, roles.storageTableDataContributor]: {
    name: guid(storage.id, identity.id, role)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
      principalId: identity.properties.principalId
      principalType: 'ServicePrincipal'
    }
    dependsOn: [storageNew]
  }
]

// ---- Key Vault ----------------------------------------------------------------------------------

module vaultNew 'keyvault.bicep' = if (empty(existingKeyVaultName)) {
  name: 'work365-keyvault'
  params: { name: vaultName, location: location, tags: tags }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [vaultNew]
}

resource insightsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Secrets are written only when given (a later deployment without them keeps the stored values).
// (Parenthesized: the parser of the settings-parity test, pycep, gets && / || / == precedence wrong.)
var needsSecret = (dataverseAuth == 'client-credentials') || ((partnerCenterAuth == 'client-credentials') && empty(partnerCenterClientId))
var needsPcSecret = (partnerCenterAuth == 'client-credentials') && !empty(partnerCenterClientId)

module clientSecretValue 'secret.bicep' = if (!empty(clientSecret)) {
  name: 'work365-secret-client'
  params: { vaultName: vaultName, name: 'work365-client-secret', value: clientSecret }
  dependsOn: [vaultNew]
}

module pcClientSecretValue 'secret.bicep' = if (!empty(partnerCenterClientSecret)) {
  name: 'work365-secret-pc-client'
  params: { vaultName: vaultName, name: 'work365-pc-client-secret', value: partnerCenterClientSecret }
  dependsOn: [vaultNew]
}

module signingKeyValue 'secret.bicep' = if (!empty(runSigningKey)) {
  name: 'work365-secret-signing-key'
  params: { vaultName: vaultName, name: 'work365-run-signing-key', value: runSigningKey }
  dependsOn: [vaultNew]
}

module notifyUrlValue 'secret.bicep' = if (!empty(notifyUrl)) {
  name: 'work365-secret-notify-url'
  params: { vaultName: vaultName, name: 'work365-notify-url', value: notifyUrl }
  dependsOn: [vaultNew]
}

// A Key Vault reference to the latest version of a secret of this vault.
// https://learn.microsoft.com/azure/app-service/app-service-key-vault-references
var vaultUri = 'https://${vaultName}${environment().suffixes.keyvaultDns}'
var clientSecretRef = '@Microsoft.KeyVault(SecretUri=${vaultUri}/secrets/work365-client-secret/)'
var pcClientSecretRef = '@Microsoft.KeyVault(SecretUri=${vaultUri}/secrets/work365-pc-client-secret/)'
var signingKeyRef = '@Microsoft.KeyVault(SecretUri=${vaultUri}/secrets/work365-run-signing-key/)'
var notifyUrlRef = '@Microsoft.KeyVault(SecretUri=${vaultUri}/secrets/work365-notify-url/)'

// ---- the Function App -----------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Zone redundancy is a regional Flex Consumption option with a cost; a sync that reruns on its schedule does not need it.
  name: 'plan-${appName}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

var storageSettings = {
  // Identity-based host storage: no account key anywhere. The app reads the same settings.
  AzureWebJobsStorage__accountName: storageName
  AzureWebJobsStorage__blobServiceUri: blobEndpoint
  AzureWebJobsStorage__queueServiceUri: 'https://${storageName}.queue.${environment().suffixes.storage}'
  AzureWebJobsStorage__tableServiceUri: 'https://${storageName}.table.${environment().suffixes.storage}'
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
}

var monitoringSettings = {
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  // Entra authentication to Application Insights as the user-assigned identity.
  // https://learn.microsoft.com/azure/azure-monitor/app/azure-ad-authentication
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
}

var coreSettings = {
  WORK365_TENANT_ID: tenantId
  WORK365_CLIENT_ID: clientId
  WORK365_DATAVERSE_URL: dataverseUrl
  WORK365_DATAVERSE_AUTH: dataverseAuth
  WORK365_PC_AUTH: partnerCenterAuth
  WORK365_MANAGED_IDENTITY_CLIENT_ID: identity.properties.clientId
  WORK365_SYNC_SCHEDULE: syncSchedule
  WORK365_CREATE_MISSING: string(createMissing)
  WORK365_WRITE_NOTES: string(writeNotes)
  WORK365_RUN_SIGNING_KEY: signingKeyRef
  WORK365_JOBS_QUEUE: 'work365-jobs'
  WORK365_RUNS_CONTAINER: 'work365-runs'
  WORK365_MAX_INSTANCES: string(maximumInstanceCount)
  WORK365_NOTIFY_FORMAT: notifyFormat
}

// Optional settings are left out when empty: the code's defaults apply (docs/configuration.md).
var optionalSettings = union(
  needsSecret ? { WORK365_CLIENT_SECRET: clientSecretRef } : {},
  needsPcSecret ? { WORK365_PC_CLIENT_SECRET: pcClientSecretRef } : {},
  (needsSecret && !empty(clientSecretExpires)) ? { WORK365_CLIENT_SECRET_EXPIRES: clientSecretExpires } : {},
  (needsPcSecret && !empty(partnerCenterClientSecretExpires)) ? { WORK365_PC_CLIENT_SECRET_EXPIRES: partnerCenterClientSecretExpires } : {},
  empty(partnerCenterTenantId) ? {} : { WORK365_PC_TENANT_ID: partnerCenterTenantId },
  empty(partnerCenterClientId) ? {} : { WORK365_PC_CLIENT_ID: partnerCenterClientId },
  empty(associateSince) ? {} : { WORK365_ASSOCIATE_SINCE: associateSince },
  empty(landingRules) ? {} : { WORK365_LANDING_RULES_FILE: landingRules },
  empty(schemaFile) ? {} : { WORK365_SCHEMA_FILE: schemaFile },
  notify ? { WORK365_NOTIFY_URL: notifyUrlRef } : {},
  empty(reportUrl) ? {} : { WORK365_REPORT_URL: reportUrl }
)

var appSettings = union(storageSettings, monitoringSettings, coreSettings, optionalSettings, extraAppSettings)

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222:Power Automate and people call the HTTP API over the internet; every route needs a function key (auth_level FUNCTION).
  // checkov:skip=CKV_AZURE_17:Callers authenticate with function keys over HTTPS; client certificates would lock out Power Automate's HTTP action.
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero by maximumInstanceCount; a scheduled sync needs no always-ready instance (the timer is a singleton).
  // checkov:skip=CKV_AZURE_213:The App Service health check pings an anonymous path; the app's /api/health needs a function key, and the alert rules of monitoring.bicep watch the runs.
  name: appName
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    // Key Vault references resolve as the user-assigned identity (the system one does not exist).
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      // No TZ / WEBSITE_TIME_ZONE on Flex Consumption: the timer's schedule is UTC.
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}/${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
  dependsOn: [storageRoles, vaultRole, packageContainer, signingKeyValue, clientSecretValue, pcClientSecretValue, notifyUrlValue]
}

// Every setting at once (FUNCTIONS_WORKER_RUNTIME and WEBSITE_RUN_FROM_PACKAGE are not set: Flex
// Consumption takes the runtime from functionAppConfig and refuses those settings).
resource appSettingsConfig 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_66:checkov reads this app-settings resource as a web config: failed request tracing is an IIS feature; a Functions app logs requests to Application Insights.
  // checkov:skip=CKV_AZURE_63:Same as CKV_AZURE_66: HTTP logs are web-server logs; requests and traces go to Application Insights.
  // checkov:skip=CKV_AZURE_65:Same as CKV_AZURE_66: detailed error pages are an IIS feature; errors are logged to Application Insights.
  // checkov:skip=CKV_AZURE_222:App settings carry no network setting; the site's public access is explained on the app resource.
  // checkov:skip=CKV_AZURE_80:A Python app: no .NET Framework version is used.
  // checkov:skip=CKV_AZURE_13:App Service Authentication would sit in front of the function keys Power Automate's HTTP action uses; every route checks its key.
  // checkov:skip=CKV_AZURE_88:Azure Files is not used: Flex Consumption runs the package from blob storage.
  parent: app
  name: 'appsettings'
  properties: appSettings
  dependsOn: [insightsRole]
}

// No FTP, no basic-auth deployment: deployments use Entra (az, azd, func) only.
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: { allow: false }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: { allow: false }
}

// ---- workbook and alerts ------------------------------------------------------------------------

module monitoring 'monitoring.bicep' = {
  name: 'work365-monitoring'
  params: {
    location: location
    tags: tags
    appName: appName
    appInsightsId: appInsights.id
    actionGroupId: actionGroupId
    scheduleIntervalHours: scheduleIntervalHours
    unassignedThreshold: unassignedThreshold
    createAlerts: createAlerts
  }
}

output AZURE_FUNCTION_APP_NAME string = app.name
output FUNCTION_APP_URL string = 'https://${app.properties.defaultHostName}'
output MANAGED_IDENTITY_CLIENT_ID string = identity.properties.clientId
output MANAGED_IDENTITY_PRINCIPAL_ID string = identity.properties.principalId
output KEY_VAULT_NAME string = vaultName
output STORAGE_ACCOUNT_NAME string = storageName
output APPLICATION_INSIGHTS_NAME string = appInsights.name
