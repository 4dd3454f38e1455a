// The workbook (infra/workbook.json) and the alert rules over the app's Application Insights. The
// queries read the run summary records (docs/operations.md#monitoring); times are UTC.
// Log search alert rules: https://learn.microsoft.com/azure/templates/microsoft.insights/scheduledqueryrules

param location string
param tags object
param appName string
param appInsightsId string

@description('Resource id of the action group the alerts notify. Empty: none.')
param actionGroupId string = ''

@description('Hours between two timer runs; "no successful run" looks at twice this (48 h at most: a log alert\'s window).')
@minValue(1)
@maxValue(24)
param scheduleIntervalHours int = 1

@minValue(0)
param unassignedThreshold int = 0

param createAlerts bool = true

var summary = loadTextContent('alerts/summary.kql')
var actions = empty(actionGroupId) ? [] : [actionGroupId]

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, appName, 'work365-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'work365-fn runs (${appName})'
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: loadTextContent('workbook.json')
  }
}

resource noSuccess 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = if (createAlerts) {
  name: 'work365-no-successful-run-${appName}'
  location: location
  tags: tags
  properties: {
    displayName: 'work365-fn: no successful run in ${scheduleIntervalHours * 2} h'
    description: 'No run that wrote finished (succeeded or partial) in twice the schedule: the timer is not running, or every run fails. Look at the failed-run alert and the workbook.'
    severity: 1
    enabled: true
    scopes: [appInsightsId]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT${scheduleIntervalHours * 2}H'
    criteria: {
      allOf: [
        {
          query: '${summary}\n${loadTextContent('alerts/no-success.kql')}'
          timeAggregation: 'Count'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: true
    actions: { actionGroups: actions }
  }
}

resource failedRun 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = if (createAlerts) {
  name: 'work365-failed-run-${appName}'
  location: location
  tags: tags
  properties: {
    displayName: 'work365-fn: a run failed'
    description: 'A sync run ended with status failed. Its summary record names the errors (service, status, code, request id): docs/troubleshooting.md.'
    severity: 1
    enabled: true
    scopes: [appInsightsId]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: '${summary}\n${loadTextContent('alerts/failed-run.kql')}'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: false
    actions: { actionGroups: actions }
  }
}

resource unassigned 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = if (createAlerts) {
  name: 'work365-unassigned-${appName}'
  location: location
  tags: tags
  properties: {
    displayName: 'work365-fn: more than ${unassignedThreshold} subscriptions left unassigned'
    description: 'A run left subscriptions unassigned (no default contract, an unmapped customer, ...): the report and the workbook say why, one fix per reason.'
    severity: 3
    enabled: true
    scopes: [appInsightsId]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: '${summary}\n${replace(loadTextContent('alerts/unassigned.kql'), '{threshold}', string(unassignedThreshold))}'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: false
    actions: { actionGroups: actions }
  }
}

output workbookId string = workbook.id
