/**
 * Unit tests of the pure modules (model, api, store, logs, job): plain Node, no DOM and
 * no JupyterLab packages, so ts-jest compiles them as CommonJS and nothing else.
 */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/src'],
  testMatch: ['**/__tests__/**/*.spec.ts'],
  transform: {
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  }
};
